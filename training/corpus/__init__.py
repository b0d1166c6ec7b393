"""The real-sound training corpus: Debian packages + shared data, mapped, deduplicated, split.

``sed-corpus build DIR`` (:mod:`training.corpus.cli`) runs :func:`training.corpus.build.build`:
:mod:`packages` (apt-get download, dpkg -x, Qt ``.rcc`` via :mod:`rcc`) ->
:mod:`mapping` (reviewed ``mapping.csv``: path regex -> AudioSet labels) -> decode to 16 kHz
mono -> :mod:`dedup` (PCM hash, log-mel fingerprint) -> grouped, stratified split ->
:mod:`synth` (synthetic thin-label events) + :mod:`soundfont` (General MIDI instruments
rendered with fluidsynth from a soundfont package, MIDI by :mod:`midi`; training split only)
-> :mod:`scenes` (strongly labelled soundscapes).
"""

__all__: list[str] = []
