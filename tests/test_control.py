"""Help requests and operator allocation (learner/control.py), FLOAT's percentile feedback."""

from __future__ import annotations

import random

import pytest

from fleet.v1 import fleet_pb2 as pb
from learner.control import ControlError, FleetControl
from monitor.calibration import PercentileBook


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def help_message(robot_id: str, score: float = 1.0, threshold: float = 0.0) -> pb.RobotMessage:
    return pb.RobotMessage(help=pb.HelpRequest(robot_id=robot_id, reason="float", score=score, threshold=threshold,
                                               holding=True))


def ended(robot_id: str) -> pb.RobotMessage:
    return pb.RobotMessage(takeover_ended=pb.TakeoverEnded(robot_id=robot_id, human_steps=5))


def cancelled(robot_id: str) -> pb.RobotMessage:
    return pb.RobotMessage(help_cancelled=pb.HelpCancelled(robot_id=robot_id, reason="waited too long"))


def drain(control: FleetControl, robot_id: str) -> list[pb.LearnerCommand]:
    queue = control.sessions[robot_id].commands
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def take_overs(commands: list[pb.LearnerCommand]) -> list[str]:
    return [c.take_over.operator_id for c in commands if c.WhichOneof("body") == "take_over"]


def check_invariants(control: FleetControl) -> None:
    driving = [s.operator_id for s in control.sessions.values() if s.operator_id]
    assert len(driving) == len(set(driving)), "one operator assigned to two robots"
    assert set(driving) == set(control.assignments), "sessions and assignments disagree"
    for operator, robot_id in control.assignments.items():
        assert control.sessions[robot_id].operator_id == operator
    assert not set(control.free_operators) & set(control.assignments), "an operator both free and assigned"
    pool_busy = [op for op in control.assignments if op in control.operators]
    assert sorted(control.free_operators + pool_busy) == sorted(control.operators)
    assert control.help_requests == control.served + control.cancelled + len(control.waiting)
    waiting = [t.robot_id for t in control.waiting]
    assert len(waiting) == len(set(waiting)), "a robot queued twice"
    assert not set(waiting) & set(control.assignments.values()), "a robot both queued and served"


@pytest.mark.parametrize("priority,min_time", [("fifo", 0.0), ("float", 0.0), ("fifo", 3.0), ("float", 3.0)])
def test_random_traffic_never_double_assigns_and_serves_or_cancels_every_request(priority, min_time):
    rng = random.Random(f"{priority}{min_time}")
    clock = Clock()
    control = FleetControl(["op-a", "op-b"], priority=priority, min_assignment_s=min_time, clock=clock)
    robots = [f"arm-{i}" for i in range(6)]
    for robot_id in robots:
        control.open(robot_id)
    outstanding: dict[str, int] = {}  # robot -> help requests not yet served or cancelled
    served = cancelled_count = 0
    driving: set[str] = set()

    def settle(robot_id: str) -> None:
        nonlocal served, cancelled_count
        got = take_overs(drain(control, robot_id))
        if got:
            served += len(got)
            outstanding.pop(robot_id, None)
            driving.add(robot_id)

    for _ in range(3000):
        clock.now += rng.uniform(0.0, 0.5)
        robot_id = rng.choice(robots)
        event = rng.random()
        if event < 0.4 and robot_id not in driving:
            if robot_id not in outstanding:
                outstanding[robot_id] = 1
            control.on_message(robot_id, help_message(robot_id, score=rng.uniform(0, 3), threshold=1.0))
        elif event < 0.7 and robot_id in driving:
            driving.discard(robot_id)
            control.on_message(robot_id, ended(robot_id))
        elif event < 0.8 and robot_id in outstanding:
            control.on_message(robot_id, cancelled(robot_id))
            outstanding.pop(robot_id)
            cancelled_count += 1
        elif event < 0.83:  # the robot's control stream drops and comes back
            session = control.sessions[robot_id]
            control.close(robot_id, session)
            outstanding.pop(robot_id, None)
            driving.discard(robot_id)
            control.open(robot_id)
        else:
            control.tick()
        for r in robots:
            settle(r)
        check_invariants(control)

    # Traffic stops: operators finish, time passes; nothing may stay queued.
    for _ in range(20):
        for robot_id in list(driving):
            driving.discard(robot_id)
            control.on_message(robot_id, ended(robot_id))
        clock.now += 5.0
        control.tick()
        for r in robots:
            settle(r)
        check_invariants(control)
    assert not control.waiting and not outstanding, "a help request was neither served nor cancelled"
    assert served > 50 and cancelled_count > 10  # the traffic exercised both ends
    assert control.served + control.cancelled >= served


def test_float_priority_serves_the_highest_index_over_threshold_first():
    control = FleetControl(["op"], priority="float")
    for robot_id in ("a", "b", "c", "d"):
        control.open(robot_id)
    control.on_message("a", help_message("a", score=5.0, threshold=1.0))  # takes the only operator
    assert take_overs(drain(control, "a")) == ["op"]
    control.on_message("b", help_message("b", score=1.2, threshold=1.0))
    control.on_message("c", help_message("c", score=3.0, threshold=1.0))  # most urgent
    control.on_message("d", help_message("d", score=4.0, threshold=2.0))  # 2x its threshold
    control.on_message("a", ended("a"))
    assert take_overs(drain(control, "c")) == ["op"]
    control.on_message("c", ended("c"))
    assert take_overs(drain(control, "d")) == ["op"]
    control.on_message("d", ended("d"))
    assert take_overs(drain(control, "b")) == ["op"]


def test_fifo_serves_in_arrival_order():
    control = FleetControl(["op"], priority="fifo")
    for robot_id in ("a", "b", "c"):
        control.open(robot_id)
    control.on_message("a", help_message("a"))
    control.on_message("b", help_message("b", score=1.0))
    control.on_message("c", help_message("c", score=9.0))
    control.on_message("a", ended("a"))
    assert take_overs(drain(control, "b")) == ["op"] and not take_overs(drain(control, "c"))


def test_an_operator_stays_the_minimum_time_and_takes_a_repeat_request_at_once():
    clock = Clock()
    control = FleetControl(["op"], min_assignment_s=10.0, clock=clock)
    control.open("a")
    control.open("b")
    control.on_message("a", help_message("a"))
    assert take_overs(drain(control, "a")) == ["op"]
    clock.now = 2.0
    control.on_message("a", ended("a"))  # handed back early ("continue", or a short takeover)
    control.on_message("b", help_message("b"))
    assert control.assignments == {"op": "a"} and not take_overs(drain(control, "b"))  # still watching a
    clock.now = 4.0
    control.on_message("a", help_message("a"))  # a asks again: straight back to its operator
    assert take_overs(drain(control, "a")) == ["op"]
    clock.now = 6.0
    control.on_message("a", ended("a"))
    clock.now = 10.5
    control.tick()
    assert take_overs(drain(control, "b")) == ["op"]  # the minimum is over: b is served


def test_percentile_feedback_moves_by_five_persists_and_reaches_every_robot(tmp_path):
    path = tmp_path / "float_percentiles.json"
    control = FleetControl([], percentiles=PercentileBook(path))
    for robot_id in ("a", "b"):
        control.open(robot_id)
    summary = pb.FloatSummary(ran=True, fired=True, operator_continued=True)
    assert control.episode_feedback("push_cube", summary, success=True) == 100.0  # false alarm: 95 -> 100
    assert control.episode_feedback("push_cube", summary, success=True) is None   # capped at 100
    missed = pb.FloatSummary(ran=True, fired=False)
    assert control.episode_feedback("push_cube", missed, success=False) == 95.0   # missed failure: -5
    assert control.episode_feedback("reach", missed, success=False) == 90.0
    assert control.episode_feedback("reach", pb.FloatSummary(ran=True, fired=True), success=False) is None
    assert control.episode_feedback("reach", pb.FloatSummary(ran=False), success=False) is None
    for robot_id in ("a", "b"):
        updates = [(c.set_float_threshold.task, c.set_float_threshold.percentile) for c in drain(control, robot_id)]
        assert updates == [("push_cube", 100.0), ("push_cube", 95.0), ("reach", 90.0)]
    reopened = FleetControl([], percentiles=PercentileBook(path))
    reopened.open("c")  # a robot that connects later learns the fleet's percentiles at once
    assert {(c.set_float_threshold.task, c.set_float_threshold.percentile) for c in drain(reopened, "c")} == {
        ("push_cube", 95.0), ("reach", 90.0)}


def ended_by(robot_id: str, operator: str) -> pb.RobotMessage:
    return pb.RobotMessage(takeover_ended=pb.TakeoverEnded(robot_id=robot_id, operator_id=operator, human_steps=3))


def test_a_person_preempts_a_simulated_operator_and_serves_the_request():
    control = FleetControl(["op"])
    for robot_id in ("a", "b"):
        control.open(robot_id)
    control.on_message("a", help_message("a"))
    assert take_overs(drain(control, "a")) == ["op"]
    control.on_message("b", help_message("b"))  # waits: the only simulated operator is on a
    served = control.served
    command = control.person_take_over("a", "alice")  # alice drives a from the dashboard
    assert command.take_over.remote and not command.take_over.assess
    sent = [c.WhichOneof("body") for c in drain(control, "a")]
    assert sent == ["hand_back", "take_over"]  # op's takeover ends first
    assert control.assignments == {"alice": "a", "op": "b"}  # op went back to the pool and took b at once
    assert take_overs(drain(control, "b")) == ["op"] and control.served == served + 1
    control.on_message("a", ended_by("a", "op"))  # op's takeover of a ends late: alice keeps a
    assert control.assignments["alice"] == "a"
    check_invariants(control)
    with pytest.raises(ControlError, match="alice is driving a"):
        control.person_take_over("b", "alice")  # one robot at a time
    with pytest.raises(ControlError, match="alice is driving a"):
        control.person_take_over("a", "bob")  # one person per robot
    with pytest.raises(ControlError, match="bob is not driving"):
        control.jog("a", "bob", 1.0, 0.0, 0.0, 0.3)
    jog = control.jog("a", "alice", 1.0, 0.0, -0.5, 0.3, gripper=-1.0)
    assert (jog.jog.dx, jog.jog.dz, jog.jog.gripper) == (1.0, -0.5, -1.0)
    control.person_hand_back("a", "alice")
    assert [c.WhichOneof("body") for c in drain(control, "a")] == ["jog", "hand_back"]
    control.on_message("a", ended_by("a", "alice"))
    assert "alice" not in control.assignments and control.free_operators == []  # people never join the pool
    check_invariants(control)


def test_a_person_answers_help_requests_and_every_one_is_served_or_cancelled():
    control = FleetControl([])  # no simulated operators: only people answer
    for robot_id in ("a", "b", "c"):
        control.open(robot_id)
        control.on_message(robot_id, help_message(robot_id))
    assert len(control.waiting) == 3
    assert control.answer("a", "alice", "continue").WhichOneof("body") == "continue_episode"
    assert control.answer("b", "alice", "end").WhichOneof("body") == "end_episode"
    assert control.answer("c", "alice", "take_over").take_over.operator_id == "alice"
    assert not control.waiting and control.served == 3
    with pytest.raises(ControlError, match="answer must be one of"):
        control.answer("a", "alice", "ignore")
    with pytest.raises(ControlError, match="not connected"):
        control.answer("zz", "alice", "continue")
    control.close("c", control.sessions["c"])  # the robot alice drives goes away: alice is free again
    assert "alice" not in control.assignments
    check_invariants(control)


def test_random_traffic_with_people_never_double_assigns_anyone():
    rng = random.Random(7)
    clock = Clock()
    control = FleetControl(["op-a", "op-b"], min_assignment_s=2.0, clock=clock)
    robots = [f"arm-{i}" for i in range(5)]
    people = ["alice", "bob"]
    for robot_id in robots:
        control.open(robot_id)
    for _ in range(3000):
        clock.now += rng.uniform(0.0, 0.5)
        robot_id, person = rng.choice(robots), rng.choice(people)
        event = rng.random()
        try:
            if event < 0.35:
                control.on_message(robot_id, help_message(robot_id, score=rng.uniform(0, 3), threshold=1.0))
            elif event < 0.55:
                driver = control.sessions[robot_id].operator_id
                control.on_message(robot_id, ended_by(robot_id, driver or ""))
            elif event < 0.65:
                control.person_take_over(robot_id, person)
            elif event < 0.75:
                control.person_hand_back(robot_id, person)
                control.on_message(robot_id, ended_by(robot_id, person))
            elif event < 0.85:
                control.answer(robot_id, person, rng.choice(["continue", "end", "take_over"]))
            elif event < 0.88:
                control.close(robot_id, control.sessions[robot_id])
                control.open(robot_id)
            else:
                control.tick()
        except ControlError:
            pass  # refused, as it should be when someone else drives
        for r in robots:
            drain(control, r)
        check_invariants(control)
        people_driving = [p for p in people if p in control.assignments]
        assert len({control.assignments[p] for p in people_driving}) == len(people_driving)
    for robot_id in robots:  # traffic stops: everyone hands back
        driver = control.sessions[robot_id].operator_id
        if driver:
            control.on_message(robot_id, ended_by(robot_id, driver))
    for _ in range(10):
        clock.now += 5.0
        control.tick()
        for robot_id in robots:
            for command in drain(control, robot_id):
                if command.WhichOneof("body") == "take_over":
                    control.on_message(robot_id, ended_by(robot_id, command.take_over.operator_id))
    assert not control.waiting and not control.assignments


def test_a_takeover_the_robot_refuses_puts_the_answered_request_back_in_the_queue():
    control = FleetControl([])
    control.open("a")
    control.on_message("a", help_message("a"))
    command = control.person_take_over("a", "alice")
    assert not control.waiting and control.served == 1
    # The robot cannot be jogged (or is paused...): it refuses and gives the operator back.
    control.on_message("a", ended_by("a", "alice"))
    control.on_message("a", pb.RobotMessage(command_applied=pb.CommandApplied(
        robot_id="a", command_id=command.command_id, accepted=False, detail="cannot be driven from afar")))
    assert [t.robot_id for t in control.waiting] == ["a"] and control.served == 0
    assert "alice" not in control.assignments
    check_invariants(control)
    # An accepted takeover keeps it served.
    command = control.answer("a", "alice", "take_over")
    control.on_message("a", pb.RobotMessage(command_applied=pb.CommandApplied(
        robot_id="a", command_id=command.command_id, accepted=True)))
    assert not control.waiting and control.served == 1
    with pytest.raises(ControlError, match="alice is driving a"):
        control.answer("a", "bob", "end")  # bob cannot end alice's takeover
    check_invariants(control)
