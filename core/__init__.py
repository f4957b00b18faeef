"""The bottom layer: what the robot side and the learner side both speak.

- `core.wire`: fleet.v1 messages to and from Python values (the one conversion point);
- `core.tls`: TLS credentials for gRPC servers and channels, and the development CA;
- `core.episode`: `EpisodeArrays`, one stored episode as arrays;
- `core.durable`: fsync, private temporary names, safe path components;
- `core.registry`: plug-ins chosen by name, each with a config dataclass.

Nothing here imports another package of the project (the generated `fleet.v1` stubs aside), so
every layer above may use it. docs/ARCHITECTURE.md has the whole picture.
"""
