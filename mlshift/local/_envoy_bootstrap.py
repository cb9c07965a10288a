"""Envoy's bootstrap for one endpoint's router: listener, admin, stats and watched xDS files.

Pure. The router listens on a loopback port; its routes come from a watched file (RDS) and its
clusters from another (CDS), both written by ``Router`` from ``_xds``'s translation. The admin
is a Unix socket of mode 0600 (see ``_envoy_admin``), or a loopback TCP port only where there
are no Unix sockets (Windows). Stats are flushed every second, with finer ``upstream_rq_time``
buckets than Envoy's default.
"""

from __future__ import annotations

from typing import Any

from mlshift.local._xds import ROUTE_CONFIG_NAME, STAT_PREFIX

__all__ = ["LATENCY_BUCKETS_MS", "bootstrap"]

# Envoy records upstream_rq_time in whole milliseconds; its default buckets jump from 1 to 5 ms
# and from 10 to 25 ms, too coarse for a model that answers in 2 ms. These resolve each of the
# first milliseconds and keep Istio's upper range.
LATENCY_BUCKETS_MS = [
    0.5, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100, 150, 250, 500,
    1000, 2500, 5000, 10000, 30000, 60000,
]  # fmt: skip


def bootstrap(
    *,
    router_port: int,
    cds_path: str,
    rds_path: str,
    node_id: str = "mlshift",
    admin_socket: str | None = None,
) -> dict[str, Any]:
    """Return Envoy's bootstrap for one endpoint's router.

    Args:
        router_port: the loopback port requests to the endpoint go to.
        cds_path: the clusters file; its directory is watched, so a file renamed into it is
            loaded within milliseconds (a file rewritten in place is not).
        rds_path: the routes file, in a directory of its own so a route change does not make
            Envoy reread the clusters.
        node_id: Envoy's node id (shows in its admin pages).
        admin_socket: the Unix socket Envoy's admin listens on, created with mode 0600 so
            only this user can reach it (the admin can stop Envoy, drain its listener, dump
            its config). None puts the admin on a loopback TCP port Envoy picks (written to
            ``--admin-address-path``), which every local user can reach: only for platforms
            without Unix sockets (Windows).

    Example:
        >>> b = bootstrap(router_port=8000, cds_path="/s/cds/cds.json", rds_path="/s/rds/rds.json",
        ...               admin_socket="/s/admin.sock")
        >>> b["admin"]["address"]["pipe"]
        {'path': '/s/admin.sock', 'mode': 384}
    """

    def source(path: str) -> dict[str, Any]:
        directory = path.rsplit("/", 1)[0] if "/" in path else "."
        return {
            "resource_api_version": "V3",
            "path_config_source": {"path": path, "watched_directory": {"path": directory}},
        }

    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": STAT_PREFIX,
        # x-request-id on every request, as Istio's sidecars add it: a mirrored copy keeps
        # it, so both versions' journals can be paired (ep.compare).
        "generate_request_id": True,
        "rds": {"route_config_name": ROUTE_CONFIG_NAME, "config_source": source(rds_path)},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                    # No x-envoy-* response headers: callers see the model server's headers.
                    "suppress_envoy_headers": True,
                },
            }
        ],
    }
    if admin_socket is not None:
        admin = {"pipe": {"path": admin_socket, "mode": 0o600}}
    else:
        # Port 0: Envoy picks a free one and writes it to --admin-address-path.
        admin = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    return {
        "node": {"id": node_id, "cluster": "mlshift"},
        "admin": {"address": admin},
        # Histograms are only merged into /stats at each flush; 1 s keeps them fresh.
        "stats_flush_interval": "1s",
        "stats_config": {
            "histogram_bucket_settings": [
                {"match": {"suffix": "upstream_rq_time"}, "buckets": LATENCY_BUCKETS_MS}
            ]
        },
        "dynamic_resources": {"cds_config": source(cds_path)},
        "static_resources": {
            "listeners": [
                {
                    "name": "router",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": router_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": manager,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }
