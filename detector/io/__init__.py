"""The daemon's network edge: the wire format, the sinks (ZeroMQ PUB, JSON lines), the
control socket, the hub (an XSUB/XPUB proxy) and CURVE security."""
