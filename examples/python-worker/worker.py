"""A minimal agent-worker in Python: implements agent.v1.AgentWorker with grpcio.

It serves one agent, `shout`, which answers with the user's message in capitals,
streamed word by word. Stubs are generated from proto/agent/v1/agent.proto at
start-up with grpcio-tools, so the .proto file stays the only contract.

    pip install -r requirements.txt
    python worker.py --listen 127.0.0.1:50060

Then point chat-core at it: AGENT_WORKER_URLS=http://127.0.0.1:50060
"""

import argparse
import os
import re
import sys
import tempfile
from concurrent import futures

import grpc
from grpc_tools import protoc

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto", "proto")


def load_stubs():
    """Compiles agent.proto into a temporary folder and imports the modules."""
    out = tempfile.mkdtemp(prefix="agent-v1-")
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "agent/v1/agent.proto",
    ])
    if status != 0:
        sys.exit(f"failed to compile agent.proto (protoc exit {status})")
    sys.path.insert(0, out)
    from agent.v1 import agent_pb2, agent_pb2_grpc  # noqa: E402

    return agent_pb2, agent_pb2_grpc


pb, rpc = load_stubs()


class Worker(rpc.AgentWorkerServicer):
    """Serves the `shout` agent."""

    def ListAgents(self, request, context):
        return pb.ListAgentsResponse(agents=[
            pb.AgentInfo(name="shout", description="Answers in capitals (a Python worker)", kind="python"),
        ])

    def Run(self, request, context):
        if request.agent != "shout":
            yield pb.RunEvent(error=pb.ErrorEvent(code="unknown_agent", message=f"no agent {request.agent}", retryable=False))
            return
        if not request.history:
            yield pb.RunEvent(error=pb.ErrorEvent(code="invalid", message="empty history", retryable=False))
            return
        reply = request.history[-1].content.upper()
        # Words with their following whitespace, so the deltas join up exactly.
        for piece in re.findall(r"\S+\s*|\s+", reply):
            yield pb.RunEvent(delta=pb.DeltaEvent(text=piece))
        yield pb.RunEvent(final=pb.FinalEvent(content=reply))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=os.environ.get("AGENT_WORKER_LISTEN", "127.0.0.1:50060"),
                        help="address to serve gRPC on (port 0 picks one; the bound address is printed)")
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    rpc.add_AgentWorkerServicer_to_server(Worker(), server)
    host = args.listen.rsplit(":", 1)[0]
    port = server.add_insecure_port(args.listen)
    server.start()
    print(f"listening on {host}:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
