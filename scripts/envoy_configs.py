"""Envoy configurations shared by the load scripts (table_memory.py, flood.py, soak.py):
a backend Envoy of direct_response listeners, and the Envoy under test with the built module
and the stateful_session hand-off. Loopback only."""

LOCAL = "127.0.0.1"


def backend_yaml(ports, admin):
    """One Envoy, one direct_response listener per port: the "servers" b0, b1, ..."""
    listeners = []
    for n, port in enumerate(ports):
        listeners.append(f"""
  - name: b{n}
    address: {{socket_address: {{address: {LOCAL}, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: b{n}
          route_config:
            response_headers_to_add:
            - header: {{key: x-backend, value: b{n}}}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/login"}}
                direct_response: {{status: 200, body: {{inline_string: "login\\n"}}}}
                response_headers_to_add:
                - header: {{key: set-cookie, value: "JSESSIONID=%REQ(x-session)%; Path=/; HttpOnly"}}
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "ok\\n"}}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router""")
    return f"""
admin: {{address: {{socket_address: {{address: {LOCAL}, port_value: {admin}}}}}}}
static_resources:
  listeners:{''.join(listeners)}
"""


def proxy_yaml(port, admin, backend_ports, plugin, wasm, xff_hops=None):
    """The Envoy under test: the module `wasm` with `plugin` (JSON text), the stateful_session
    hand-off, a STATIC round-robin cluster of `backend_ports`. With `xff_hops`, the client
    address is taken from X-Forwarded-For (use_remote_address, xff_num_trusted_hops), as
    envoy/client-ip.yaml does."""
    plugin = plugin.replace("'", "''")
    xff = ""
    if xff_hops is not None:
        xff = f"""
          use_remote_address: true
          xff_num_trusted_hops: {xff_hops}"""
    endpoints = "".join(f"""
        - endpoint: {{address: {{socket_address: {{address: {LOCAL}, port_value: {p}}}}}}}"""
                        for p in backend_ports)
    return f"""
admin: {{address: {{socket_address: {{address: {LOCAL}, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: http
    address: {{socket_address: {{address: {LOCAL}, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http{xff}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backends}}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: persist
                root_id: persist
                vm_config:
                  vm_id: persist
                  runtime: envoy.wasm.runtime.v8
                  code: {{local: {{filename: "{wasm}"}}}}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{plugin}'
          - name: envoy.filters.http.stateful_session
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession
              session_state:
                name: envoy.http.stateful_session.header
                typed_config:
                  "@type": type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState
                  name: x-persist-upstream
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: backends
    type: STATIC
    connect_timeout: 0.5s
    lb_policy: ROUND_ROBIN
    common_lb_config:
      override_host_status: {{statuses: [UNKNOWN, HEALTHY]}}
    load_assignment:
      cluster_name: backends
      endpoints:
      - lb_endpoints:{endpoints}
"""
