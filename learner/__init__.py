"""The cloud side: gRPC server, episode store, trainer process, algorithms, weight publisher.

Never imports robot_client.
"""
