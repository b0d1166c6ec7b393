"""Audio sources (stage 1): the :class:`~detector.sources.base.Source` contract, files,
the microphone and raw PCM on stdin, the ring buffer and the resampler between them.

``detector.sources.parse`` turns a CLI string into a source. This package imports nothing
itself, so importing one source never loads another's dependencies (sounddevice).
"""
