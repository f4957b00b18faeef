"""What starts and stops fleet processes on one machine, for the tests, the benchmarks and the demo:
free loopback ports, waiting for a condition, a real redis-server, `fleet learner` / `fleet ingest`
and `fleet robot` subprocesses with their logs, stopping a group of them in order, and a whole
fleet run from the first demonstration to its summary.

- `harness.processes`: free_port, wait_for, single_thread_env, spawn_fleet, spawn_robot, stop_processes, stop_fleet
- `harness.learner`: LearnerProcess
- `harness.redis_server`: RedisServer
- `harness.fleet`: FleetConfig, FleetRun, run_fleet
"""
