"""Load a synthetic cluster into a real kube-apiserver by writing its objects straight into etcd,
as the API server itself stores them (issue 20, point 5: "plan the loading").

Creating Services through the API slows as the cluster grows: kube-apiserver v1.36's ClusterIP
allocator (MultiCIDRServiceAllocator, GA and locked on) counts every allocated IPAddress on each
allocation (`ipallocator.(*Allocator).Used`, seen in the API server's goroutine dump while its
two cores were busy), so each create costs time linear in the Services before it: about 370
objects a second at first, 120 at 29,000 objects, about 20 past 35,000 Services. Written into
etcd, the objects cost the API server only its watch cache's decoding, and 50,000 Services with
their slices load in well under a minute.

Each object is written in the form the API server stores and serves for one created through the
API with the kubernetes client (read back from v1.36 and copied here): its defaults filled in
(a port's protocol and targetPort, the cluster IPs, IP families, session affinity, traffic
policy), a uid, a creation time, the slice's generation, and the `managedFields` entry of the
client's create (manager `OpenAPI-Generator`), which is a good part of every listed object's
bytes. The JSON the API server decodes is the same it would write (it reads JSON or protobuf
from etcd alike). Each ClusterIP gets the IPAddress object the allocator would have made, so the
API server's repair loop finds nothing to do. Namespaces are still created through the API.

    load_through_etcd(etcd_port, objects)  # objects as bench/compare.py's sync_cluster makes them
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

ETCD_TXN_OPS = 128  # etcd's default --max-txn-ops: the puts one request may carry
ETCD_PREFIX = "/registry"  # kube-apiserver's default --etcd-prefix
_SERVICE_FIELDS = {"f:clusterIP": {}, "f:internalTrafficPolicy": {}, "f:sessionAffinity": {}, "f:type": {}}
_SLICE_FIELDS = {
    "f:addressType": {},
    "f:endpoints": {},  # atomic lists: one entry each
    "f:metadata": {"f:labels": {".": {}, "f:kubernetes.io/service-name": {}}},
    "f:ports": {},
}


def _managed(api_version: str, fields: dict[str, Any], now: str) -> list[dict[str, Any]]:
    return [
        {
            "manager": "OpenAPI-Generator",  # the kubernetes Python client's creates
            "operation": "Update",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        }
    ]


def _port(port: dict[str, Any]) -> dict[str, Any]:
    return {"name": port["name"], "protocol": port.get("protocol", "TCP"), "port": port["port"]}


def _metadata(obj: dict[str, Any], now: str) -> dict[str, Any]:
    return {**obj["metadata"], "uid": str(uuid.uuid4()), "creationTimestamp": now}


def stored_service(obj: dict[str, Any], now: str) -> dict[str, Any]:
    """A Service as the API server stores one created through the API (defaults filled in)."""
    spec = obj["spec"]
    ports = [
        {
            "name": port["name"],
            "protocol": port.get("protocol", "TCP"),
            "port": port["port"],
            "targetPort": port["port"],
        }
        for port in spec["ports"]
    ]
    headless = spec["clusterIP"] == "None"
    port_fields: dict[str, Any] = {".": {}}
    for port in ports:
        key = "k:" + json.dumps({"port": port["port"], "protocol": port["protocol"]}, separators=(",", ":"))
        port_fields[key] = {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}
    metadata = _metadata(obj, now)
    metadata["managedFields"] = _managed("v1", {"f:spec": {**_SERVICE_FIELDS, "f:ports": port_fields}}, now)
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {
            "ports": ports,
            "clusterIP": spec["clusterIP"],
            "clusterIPs": [spec["clusterIP"]],
            "type": "ClusterIP",
            "sessionAffinity": "None",
            # What v1.36 gives a headless Service without a selector, and a ClusterIP one.
            "ipFamilies": ["IPv4", "IPv6"] if headless else ["IPv4"],
            "ipFamilyPolicy": "RequireDualStack" if headless else "SingleStack",
            "internalTrafficPolicy": "Cluster",
        },
        "status": {"loadBalancer": {}},
    }


def stored_slice(obj: dict[str, Any], now: str) -> dict[str, Any]:
    """An EndpointSlice as the API server stores one created through the API."""
    metadata = _metadata(obj, now)
    metadata["generation"] = 1
    metadata["managedFields"] = _managed("discovery.k8s.io/v1", _SLICE_FIELDS, now)
    ports = [
        {"name": port["name"], "protocol": port.get("protocol", "TCP"), "port": port["port"]} for port in obj["ports"]
    ]
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": metadata,
        "addressType": obj["addressType"],
        "endpoints": obj["endpoints"],
        "ports": ports,
    }


def stored_ip_address(service: dict[str, Any], now: str) -> dict[str, Any]:
    """The IPAddress object the ClusterIP allocator makes for a Service's cluster IP."""
    meta = service["metadata"]
    return {
        "kind": "IPAddress",
        "apiVersion": "networking.k8s.io/v1",
        "metadata": {
            "name": service["spec"]["clusterIP"],
            "uid": str(uuid.uuid4()),
            "creationTimestamp": now,
            "labels": {
                "ipaddress.kubernetes.io/ip-family": "IPv4",
                "ipaddress.kubernetes.io/managed-by": "ipallocator.k8s.io",
            },
        },
        "spec": {
            "parentRef": {"group": "", "resource": "services", "namespace": meta["namespace"], "name": meta["name"]}
        },
    }


def stored_pod(obj: dict[str, Any], now: str) -> dict[str, Any]:
    """A running Pod as the API server stores it once the kubelet has reported its address (one
    container; the defaults the API server fills in on read are left to it)."""
    metadata = _metadata(obj, now)
    metadata["managedFields"] = _managed(
        "v1", {"f:spec": {"f:containers": {'k:{"name":"app"}': {".": {}, "f:image": {}, "f:name": {}}}}}, now
    )
    ip = obj["status"]["podIP"]
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": metadata,
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}], "nodeName": "node-0"},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now},
    }


def stored(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(etcd key, stored object) for every Service (and its IPAddress), EndpointSlice and Pod."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for obj in objects:
        meta = obj["metadata"]
        if obj["kind"] == "Service":
            service = stored_service(obj, now)
            out.append((f"{ETCD_PREFIX}/services/specs/{meta['namespace']}/{meta['name']}", service))
            if service["spec"]["clusterIP"] != "None":
                out.append(
                    (f"{ETCD_PREFIX}/ipaddresses/{service['spec']['clusterIP']}", stored_ip_address(service, now))
                )
        elif obj["kind"] == "EndpointSlice":
            out.append((f"{ETCD_PREFIX}/endpointslices/{meta['namespace']}/{meta['name']}", stored_slice(obj, now)))
        elif obj["kind"] == "Pod":
            out.append((f"{ETCD_PREFIX}/pods/{meta['namespace']}/{meta['name']}", stored_pod(obj, now)))
        else:
            raise ValueError(f"not loaded through etcd: {obj['kind']}")
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _put_all(etcd_port: int, items: list[tuple[str, dict[str, Any]]]) -> None:
    """One etcd transaction of puts, through etcd's JSON gateway (`/v3/kv/txn`)."""
    body = {
        "success": [
            {"requestPut": {"key": _b64(key.encode()), "value": _b64(json.dumps(obj, separators=(",", ":")).encode())}}
            for key, obj in items
        ]
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{etcd_port}/v3/kv/txn", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
    if not reply.get("succeeded"):
        raise RuntimeError(f"etcd refused a transaction: {reply}")


def load_through_etcd(etcd_port: int, objects: list[dict[str, Any]]) -> int:
    """Write every Service, EndpointSlice and Pod of `objects` into etcd; the keys written."""
    items = stored(objects)
    batches = [items[i : i + ETCD_TXN_OPS] for i in range(0, len(items), ETCD_TXN_OPS)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda batch: _put_all(etcd_port, batch), batches))
    return len(items)
