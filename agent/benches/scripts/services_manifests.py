#!/usr/bin/env python3
"""N Services of one TCP port with three ready endpoints each (one
EndpointSlice each) and the Node node-a, as one manifests file: the agent
bench's Services without its pods and policies.

    python3 agent/benches/scripts/services_manifests.py 10000 > DIR/cluster.yaml
"""
import sys

n = int(sys.argv[1])
out = sys.stdout
out.write("apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n"
          "status: {addresses: [{type: InternalIP, address: 10.0.1.1}]}\n")
for i in range(n):
    ip = "10.96.%d.%d" % (i // 250, i % 250 + 1)
    eps = ", ".join(
        "{addresses: [10.244.%d.%d], conditions: {ready: true}, nodeName: node-%s}"
        % (i % 200, (i + j) % 250 + 1, "a" if j == 0 else "b") for j in range(3))
    out.write("---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-%d, namespace: bench}\n"
              "spec: {clusterIP: %s, ports: [{name: http, port: 80, targetPort: 8080}]}\n" % (i, ip))
    out.write("---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
              "metadata: {name: svc-%d-1, namespace: bench, labels: {kubernetes.io/service-name: svc-%d}}\n"
              "addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\nendpoints: [%s]\n"
              % (i, i, eps))
