"""The robot side: control loop, drivers, teleop sources, spool, uplink and weight hot swap.

Never imports learner.
"""
