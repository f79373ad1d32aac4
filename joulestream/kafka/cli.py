"""``joulestream kafka fetch|start|stop|status``: the local brokers (one, or a cluster)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from joulestream.kafka import clients, principals, security
from joulestream.kafka.broker import default_data_dir
from joulestream.kafka.cluster import LocalCluster, read_layout
from joulestream.kafka.errors import LocalKafkaError
from joulestream.kafka.jars import default_libs_dir, fetch_jars
from joulestream.options import topics_from
from joulestream.settings import DEFAULT_BOOTSTRAP, bootstrap_servers

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def local_listener(bootstrap: str) -> tuple[str, int]:
    """Where the local broker listens: the configured bootstrap server when it is on this
    machine (so ``kafka start`` and every client agree), else DEFAULT_BOOTSTRAP."""
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    if host in _LOOPBACK and port.isdigit():
        return host, int(port)
    host, _, port = DEFAULT_BOOTSTRAP.rpartition(":")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kafka_command", required=True, metavar="COMMAND")
    fetch = sub.add_parser("fetch", help="download the Kafka jars through Maven (cached)")
    fetch.add_argument(
        "--libs-dir", type=Path, default=None, help=f"jar cache (default {default_libs_dir()})"
    )
    host, port = local_listener(bootstrap_servers())
    for name, help_text in (
        ("start", "start the brokers in the background and wait until each answers"),
        ("stop", "stop the brokers (SIGTERM, then SIGKILL)"),
        ("status", "say whether the brokers run and answer; exit 1 when one does not"),
    ):
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--data-dir",
            type=Path,
            default=default_data_dir(),
            help="storage, config, pid files and logs (default %(default)s)",
        )
        command.add_argument("--host", default=host, help="listen address (default %(default)s)")
        command.add_argument(
            "--port",
            type=int,
            default=port,
            help="client port of broker 1; broker N listens on PORT+N-1 (default %(default)s)",
        )
        command.add_argument(
            "--controller-port",
            type=int,
            default=None,
            help="KRaft controller port of broker 1, the next ones above it "
            "(default PORT + brokers)",
        )
        if name == "start":
            command.add_argument(
                "--secure",
                action="store_true",
                default=None,
                help="SASL_SSL only (SCRAM-SHA-512 over TLS, CA and certificates made in the "
                "data dir), ACLs with nothing allowed by default; see 'kafka credentials'",
            )
            command.add_argument(
                "--brokers",
                type=int,
                default=None,
                help="nodes, each its own process (default: as the data dir's cluster was "
                "started, else 1); topics then get replication min(3, brokers)",
            )
        if name == "status":
            command.add_argument("--json", action="store_true", help="print a JSON document")
        else:
            command.add_argument(
                "--timeout",
                type=float,
                default=90 if name == "start" else 30,
                help="seconds to wait (default %(default)s)",
            )

    credentials = sub.add_parser(
        "credentials",
        help="print export lines of a principal of a --secure cluster (made on first call)",
        description="Print `export JOULESTREAM_...` lines for a principal of the --secure "
        "cluster in --data-dir: the admin (super user), the pipeline (processor and sinks) or "
        "one cluster's agents, whose user, ACLs and own source topics are made on first call.",
    )
    credentials.add_argument(
        "--data-dir", type=Path, default=default_data_dir(), help="(default %(default)s)"
    )
    who = credentials.add_mutually_exclusive_group(required=True)
    who.add_argument("--role", choices=("admin", "pipeline"))
    who.add_argument("--cluster", metavar="NAME", help="the agents of cluster NAME")
    credentials.add_argument(
        "--format",
        choices=("env", "kubernetes"),
        default="env",
        help="export lines (default), or a Kubernetes Secret joulestream-kafka (JSON, for "
        "kubectl apply -f -) with the CA inline",
    )
    credentials.add_argument(
        "--topic-prefix",
        default=None,
        help="prefix of the pipeline's topics (default $JOULESTREAM_TOPIC_PREFIX or none)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except LocalKafkaError as exc:
        print(f"joulestream kafka {args.kafka_command}: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.kafka_command == "fetch":
        print(f"kafka jars in {fetch_jars(args.libs_dir)}")
        return 0
    if args.kafka_command == "credentials":
        return _credentials(args)
    cluster = LocalCluster.open(
        args.data_dir,
        brokers=getattr(args, "brokers", None),
        host=args.host,
        port=args.port,
        controller_port=args.controller_port,
        security="sasl_ssl" if getattr(args, "secure", None) else None,
    )
    if args.kafka_command == "start":
        cluster.start(timeout=args.timeout)
        for node in cluster.nodes:
            print(node.status().describe())
        return 0
    if args.kafka_command == "stop":
        stopped = cluster.stop(timeout=args.timeout)
        print("kafka stopped" if stopped else f"kafka was not running ({args.data_dir})")
        return 0
    report = cluster.status()
    if args.json:
        print(json.dumps(report))
    else:
        for node in cluster.nodes:
            print(node.status().describe())
    return 0 if all(broker["alive"] for broker in report["brokers"]) else 1


def _credentials(args: argparse.Namespace) -> int:
    layout = read_layout(args.data_dir)
    if layout is None or layout.security != "sasl_ssl":
        raise LocalKafkaError(f"no --secure cluster in {args.data_dir} (kafka start --secure)")
    cluster = LocalCluster(args.data_dir, layout)
    topics = topics_from(args)
    if args.role == "admin":
        settings = security.admin_settings(args.data_dir)
    elif args.role == "pipeline":
        rights = principals.pipeline_rights(topics)
        settings = principals.ensure_principal(args.data_dir, cluster.bootstrap, "pipeline", rights)
    else:
        admin = clients.admin(cluster.bootstrap, security.admin_settings(args.data_dir))
        principals.ensure_cluster_topics(admin, topics, args.cluster)
        rights = principals.cluster_rights(topics, args.cluster)
        user = f"cluster-{args.cluster}"
        settings = principals.ensure_principal(args.data_dir, cluster.bootstrap, user, rights)
    if args.format == "kubernetes":
        ca_pem = security.ca_file(args.data_dir).read_text()
        print(principals.kubernetes_secret(cluster.bootstrap, settings, args.cluster, ca_pem))
        return 0
    for line in principals.export_lines(cluster.bootstrap, settings, args.cluster):
        print(line)
    return 0
