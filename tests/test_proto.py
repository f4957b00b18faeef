"""The committed gRPC stubs must be what `make proto` generates from fleet.proto."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ["fleet_pb2.py", "fleet_pb2.pyi", "fleet_pb2_grpc.py"]


def test_committed_stubs_match_the_proto(tmp_path):
    proto_dir = tmp_path / "proto"
    (proto_dir / "fleet" / "v1").mkdir(parents=True)
    (proto_dir / "fleet" / "v1" / "fleet.proto").write_bytes((ROOT / "proto/fleet/v1/fleet.proto").read_bytes())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(proto_dir), f"--python_out={proto_dir}",
                    f"--pyi_out={proto_dir}", f"--grpc_python_out={proto_dir}", str(proto_dir / "fleet/v1/fleet.proto")],
                   check=True)
    stale = [name for name in GENERATED
             if (proto_dir / "fleet/v1" / name).read_bytes() != (ROOT / "proto/fleet/v1" / name).read_bytes()]
    assert not stale, f"stubs {stale} are stale: run `make proto` and commit the result"
