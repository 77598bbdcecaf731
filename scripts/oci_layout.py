#!/usr/bin/env python3
"""Writes an OCI image layout holding one wasm module, in the form Istio's WasmPlugin
(`url: oci://...`) and Envoy Gateway (`code.type: Image`) pull: the "compat" wasm image, a
standard OCI image whose single layer is a gzip'd tar with the module as `plugin.wasm`.

    scripts/oci_layout.py --wasm dist/envoy_persist.wasm --tag 0.1.0 --out dist/oci

Layout written (OCI image-layout 1.0):
    oci-layout                    {"imageLayoutVersion": "1.0.0"}
    index.json                    one manifest, tagged (org.opencontainers.image.ref.name)
    blobs/sha256/<digest>         the manifest, the image config and the layer

Media types:
    manifest  application/vnd.oci.image.manifest.v1+json
    config    application/vnd.oci.image.config.v1+json
    layer     application/vnd.oci.image.layer.v1.tar+gzip   (plugin.wasm, mode 0644, uid/gid 0)
    manifest annotation module.wasm.image/variant=compat

Deterministic: every timestamp (tar entry, gzip header, config `created`) is SOURCE_DATE_EPOCH
(default 0), so the same module always gives the same digests. Python standard library only.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
IN_LAYER = "plugin.wasm"  # the file name the fetchers look for in the layer
WASM_MAGIC = b"\0asm"


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(module: bytes, epoch: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(IN_LAYER)
        info.size = len(module)
        info.mode = 0o644
        info.mtime = epoch
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(module))
    return buf.getvalue()


def gzip_bytes(data: bytes, epoch: int) -> bytes:
    buf = io.BytesIO()
    # filename="" and a fixed mtime: nothing of this machine or this moment in the header.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=epoch) as gz:
        gz.write(data)
    return buf.getvalue()


class Blobs:
    def __init__(self, root: Path):
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True)

    def put(self, media_type: str, data: bytes, annotations=None) -> dict:
        hexd = hashlib.sha256(data).hexdigest()
        (self.dir / hexd).write_bytes(data)
        desc = {"mediaType": media_type, "digest": f"sha256:{hexd}", "size": len(data)}
        if annotations:
            desc["annotations"] = annotations
        return desc


def write_layout(module: bytes, out: Path, tag: str, title: str, epoch: int) -> dict:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    tar = layer_tar(module, epoch)
    blobs = Blobs(out)
    layer = blobs.put(LAYER, gzip_bytes(tar, epoch))
    config = blobs.put(CONFIG, canonical({
        "architecture": "wasm",
        "os": "wasip1",
        "created": created,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
    }))
    annotations = {
        "module.wasm.image/variant": "compat",  # what the compat variant asks of an OCI layer image
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.version": tag,
        "org.opencontainers.image.created": created,
    }
    manifest = blobs.put(MANIFEST, canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config,
        "layers": [layer],
        "annotations": annotations,
    }), annotations={"org.opencontainers.image.ref.name": tag})
    (out / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    (out / "index.json").write_bytes(canonical({"schemaVersion": 2, "mediaType": INDEX, "manifests": [manifest]}))
    return {"manifest": manifest["digest"], "config": config["digest"], "layer": layer["digest"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wasm", required=True, type=Path, help="the module to package")
    ap.add_argument("--out", required=True, type=Path, help="layout directory (replaced)")
    ap.add_argument("--tag", required=True, help="the layout's tag (org.opencontainers.image.ref.name)")
    ap.add_argument("--title", default="envoy-persist", help="org.opencontainers.image.title")
    args = ap.parse_args(argv)
    module = args.wasm.read_bytes()
    if not module.startswith(WASM_MAGIC):
        print(f"{args.wasm}: not a wasm module", file=sys.stderr)
        return 1
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or 0)
    digests = write_layout(module, args.out, args.tag, args.title, epoch)
    print(f"{args.out}: OCI layout, tag {args.tag}, manifest {digests['manifest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
