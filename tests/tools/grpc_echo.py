"""A real gRPC server and client (grpcio, PyPI `grpcio` and `grpcio-health-checking`) for
tests/grpc.rs. Messages are raw bytes (no protobuf code generation is needed to carry
them), so the calls exercise exactly what the gateway sees: HTTP/2 streams, gRPC
framing, headers and trailers.

    grpc_echo.py serve PORT [--cert PEM --key KEY]
        Service test.Echo: Unary (echoes the request, trailer x-trailer: kept),
        Count (server streaming: request "N" -> messages "0".."N-1"),
        Chat (bidirectional: each message m -> "echo:m", in order; the client sends each
        message only after the previous echo arrived),
        and grpc.health.v1.Health (test.Echo and "" SERVING). Prints "ready" when serving.

    grpc_echo.py call TARGET METHOD [--ca PEM --authority NAME] [--timeout S]
                 [--metadata NAME=VALUE]... [--message TEXT]...
        Calls METHOD (unary, count, chat) and prints one JSON object:
        {"code", "details", "messages", "trailers", "initial"}.
"""

import argparse
import json
import queue
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def identity(data):
    return data


def unary(request, context):
    context.set_trailing_metadata((("x-trailer", "kept"),))
    return b"" + request


def count(request, context):
    context.set_trailing_metadata((("x-trailer", "counted"),))
    for i in range(int(request.decode() or "0")):
        yield str(i).encode()


def chat(requests, context):
    context.set_trailing_metadata((("x-trailer", "chatted"),))
    for message in requests:
        yield b"echo:" + message


def serve(args):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, identity, identity),
        "Count": grpc.unary_stream_rpc_method_handler(count, identity, identity),
        "Chat": grpc.stream_stream_rpc_method_handler(chat, identity, identity),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    health_servicer = health.HealthServicer()
    for service in ("", "test.Echo"):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    address = f"127.0.0.1:{args.port}"
    if args.cert:
        with open(args.cert, "rb") as cert, open(args.key, "rb") as key:
            credentials = grpc.ssl_server_credentials(((key.read(), cert.read()),))
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def call(args):
    if args.ca:
        with open(args.ca, "rb") as ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca.read())
        options = [("grpc.ssl_target_name_override", args.authority)] if args.authority else []
        channel = grpc.secure_channel(args.target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.target)
    metadata = [tuple(item.split("=", 1)) for item in args.metadata]
    messages = [m.encode() for m in args.message]
    path = {"unary": "/test.Echo/Unary", "count": "/test.Echo/Count", "chat": "/test.Echo/Chat"}[
        args.method
    ]
    result = {"code": "OK", "details": "", "messages": [], "trailers": {}, "initial": {}}
    kwargs = {"metadata": metadata, "timeout": args.timeout}
    try:
        if args.method == "unary":
            stub = channel.unary_unary(path, identity, identity)
            response, state = stub.with_call(messages[0] if messages else b"", **kwargs)
            replies = [response]
        elif args.method == "count":
            state = channel.unary_stream(path, identity, identity)(messages[0], **kwargs)
            replies = list(state)
        else:
            # Ping-pong: each message is sent only once the echo of the one before it has
            # come back, so a proxy that buffered either direction would stall the call.
            turns = queue.Queue()
            turns.put(True)

            def outgoing():
                for message in messages:
                    turns.get(timeout=10)
                    yield message

            state = channel.stream_stream(path, identity, identity)(outgoing(), **kwargs)
            replies = []
            for reply in state:
                replies.append(reply)
                turns.put(True)
        result["messages"] = [r.decode() for r in replies]
        result["trailers"] = dict(state.trailing_metadata() or ())
        result["initial"] = dict(state.initial_metadata() or ())
    except grpc.RpcError as error:
        result["code"] = error.code().name
        result["details"] = error.details() or ""
        result["trailers"] = dict(error.trailing_metadata() or ())
        result["initial"] = dict(error.initial_metadata() or ())
    print(json.dumps(result), flush=True)


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    serve_args = commands.add_parser("serve")
    serve_args.add_argument("port", type=int)
    serve_args.add_argument("--cert")
    serve_args.add_argument("--key")
    call_args = commands.add_parser("call")
    call_args.add_argument("target")
    call_args.add_argument("method", choices=("unary", "count", "chat"))
    call_args.add_argument("--ca")
    call_args.add_argument("--authority")
    call_args.add_argument("--timeout", type=float)
    call_args.add_argument("--metadata", action="append", default=[])
    call_args.add_argument("--message", action="append", default=[])
    args = parser.parse_args()
    serve(args) if args.command == "serve" else call(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
