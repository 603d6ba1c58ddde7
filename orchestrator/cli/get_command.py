"""`edgectl get nodes|agents|models|endpoints [-o table|wide|json|yaml]`: list what the
controller knows."""

from __future__ import annotations

import argparse
from typing import Any

from google.protobuf.message import Message

from edgefleet.v1 import controller_pb2
from orchestrator.cli.client import add_controller_option, connect
from orchestrator.cli.console import Consoles
from orchestrator.cli.endpoints_table import endpoints_table
from orchestrator.cli.output import add_output_option, print_document, print_table
from orchestrator.cli.tables import agents_table, models_table, nodes_table

# Accepted spellings, kubectl-style: singular, plural, short.
KINDS = {
    "nodes": "nodes",
    "node": "nodes",
    "no": "nodes",
    "agents": "agents",
    "agent": "agents",
    "models": "models",
    "model": "models",
    "endpoints": "endpoints",
    "endpoint": "endpoints",
    "ep": "endpoints",
}


def register(commands: Any) -> None:
    """Add the `get` command."""
    parser = commands.add_parser(
        "get",
        help="list nodes, agents, models or gateway endpoints",
        description="List nodes, agents, models or the fleet's OpenAI gateways (endpoints: "
        "the controller's and each node's, with the routing table each uses) as the "
        "controller sees them.",
    )
    parser.add_argument("kind", choices=sorted(KINDS), metavar="nodes|agents|models|endpoints")
    add_output_option(parser)
    add_controller_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, consoles: Consoles) -> int:
    """One List call, printed as a table or as the proto's JSON/YAML."""
    kind = KINDS[args.kind]
    wide = args.output == "wide"
    with connect(args) as controller:
        if kind == "nodes":
            nodes = controller.call(
                "ListNodes", controller_pb2.ListNodesRequest(), controller_pb2.ListNodesResponse
            )
            reply: Message = nodes
            table = nodes_table(nodes.nodes, wide=wide)
        elif kind == "agents":
            agents = controller.call(
                "ListAgents", controller_pb2.ListAgentsRequest(), controller_pb2.ListAgentsResponse
            )
            reply = agents
            table = agents_table(agents.agents, wide=wide)
        elif kind == "endpoints":
            endpoints = controller.call(
                "ListEndpoints",
                controller_pb2.ListEndpointsRequest(),
                controller_pb2.ListEndpointsResponse,
            )
            reply = endpoints
            table = endpoints_table(endpoints.endpoints, endpoints.routes_generation, wide=wide)
        else:
            models = controller.call(
                "ListModels", controller_pb2.ListModelsRequest(), controller_pb2.ListModelsResponse
            )
            reply = models
            table = models_table(models.models, wide=wide)
    if args.output in ("json", "yaml"):
        print_document(reply, args.output, consoles)
    elif table.row_count:
        print_table(table, consoles)
    else:
        consoles.err.print(f"no {kind}", markup=False)
    return 0
