"""C2PA manifests for th outputs (c2pa-python 0.38): what th claims about a file, signing, reading.

Signed offline with ES256 and no timestamp authority. The manifest carries:
``c2pa.actions.v2`` (``c2pa.created`` with the IPTC *trainedAlgorithmicMedia* source type and th as
software agent, then ``c2pa.watermarked``), a ``c2pa.soft-binding`` assertion with the watermark
payload, ``c2pa.training-mining`` set to notAllowed, and an ``org.th.generation`` assertion with the
generation facts (model card, avatar, consent, driver).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from provenance.keys import Identity

TH_ASSERTION = "org.th.generation"
SOFT_BINDING_ALG = "org.th.watermark.v1"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".png": "image/png",
        ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


@dataclass(frozen=True)
class GenerationFacts:
    """What th knows about how a file was generated (unknown fields stay None)."""

    th_version: str
    model_card_id: str | None = None
    model_sha256: str | None = None
    avatar_id: str | None = None
    consent_statement: str | None = None
    driver_sha256: str | None = None

    @classmethod
    def current(cls) -> GenerationFacts:
        return cls(th_version=th_version())


def th_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("th")
    except PackageNotFoundError:
        return "0+unknown"


def manifest_definition(facts: GenerationFacts, payload: str, title: str) -> dict:
    """The manifest JSON th signs for one file whose watermark payload is ``payload``."""
    agent = {"name": "th", "version": facts.th_version}
    training = {"use": "notAllowed"}
    return {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions.v2",
                "data": {
                    "actions": [
                        {"action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE,
                         "softwareAgent": agent},
                        {"action": "c2pa.watermarked", "softwareAgent": agent,
                         "parameters": {"description": f"invisible watermark {SOFT_BINDING_ALG}, payload {payload}"}},
                    ]
                },
            },
            {
                "label": "c2pa.soft-binding",
                "data": {"alg": SOFT_BINDING_ALG, "blocks": [{"scope": {}, "value": payload}]},
            },
            {
                "label": "c2pa.training-mining",
                "data": {"entries": {k: training for k in (
                    "c2pa.ai_generative_training", "c2pa.ai_inference", "c2pa.ai_training", "c2pa.data_mining")}},
            },
            {"label": TH_ASSERTION, "data": {**asdict(facts), "watermark_payload": payload}},
        ],
    }


def mime_for(path: Path) -> str:
    from synth.errors import UserError

    try:
        return MIME[path.suffix.lower()]
    except KeyError:
        raise UserError(f"{path}: th writes .mp4, .png or .jpg outputs, not {path.suffix or 'no suffix'}") from None


def sign_file(source: Path, dest: Path, definition: dict, identity: Identity, mime: str) -> None:
    """Embed a signed manifest: read ``source``, write the signed asset to ``dest`` (different paths)."""
    with open(source, "rb") as src, open(dest, "w+b") as dst:
        sign_stream(src, dst, definition, identity, mime)


def sign_stream(src: BinaryIO, dst: BinaryIO, definition: dict, identity: Identity, mime: str) -> None:
    """Embed a signed manifest: read the asset from ``src``, write the signed asset to ``dst`` (seekable)."""
    import c2pa

    from synth.errors import UserError

    try:
        info = c2pa.C2paSignerInfo(alg="es256", sign_cert=identity.chain_pem, private_key=identity.key_pem,
                                   ta_url=None)
        signer = c2pa.Signer.from_info(info)
        settings = {"builder": {"thumbnail": {"enabled": False}}}
        with c2pa.Context.from_dict(settings) as ctx, c2pa.Builder(json.dumps(definition), ctx) as builder:
            builder.sign(signer, mime, src, dst)
        signer.close()
    except c2pa.C2paError as e:
        detail = " ".join(str(e).split())  # C2PA errors span lines; th's errors are one line
        raise UserError(f"C2PA signing failed ({detail}); nothing was written; check the signing identity "
                        "with `th keys show`", exit_code=1) from e


def probe_signer(identity: Identity) -> None:
    """Sign a tiny in-memory PNG: a certificate chain C2PA refuses fails here, before any work."""
    import io

    import cv2
    import numpy as np

    from synth.errors import UserError

    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    definition = manifest_definition(GenerationFacts.current(), "00000000", "probe.png")
    try:
        sign_stream(io.BytesIO(png.tobytes()), io.BytesIO(), definition, identity, "image/png")
    except UserError as e:
        detail = str(e.__cause__ or e)
        raise UserError(f"C2PA refuses to sign with this identity ({' '.join(detail.split())}); `th keys show` "
                        "describes it, `th keys init --force` or `th keys import` replaces it") from e


@dataclass(frozen=True)
class ManifestReport:
    """The C2PA side of ``th verify``: state is Trusted | Valid | Invalid | absent."""

    state: str
    claims: dict | None
    payload: str | None
    errors: list[str]
    signer: str | None


def read_manifest(path: Path, trust_pems: list[bytes]) -> ManifestReport:
    """Read and validate the active manifest of ``path``, trusting the given root certificates."""
    import c2pa

    settings: dict = {"verify": {"verify_trust": bool(trust_pems)}}
    if trust_pems:
        settings["trust"] = {"user_anchors": b"".join(trust_pems).decode()}
    try:
        with c2pa.Context.from_dict(settings) as ctx, open(path, "rb") as f:
            reader = c2pa.Reader(mime_for_reading(path), f, None, ctx)
            data = json.loads(reader.json())
            state = reader.get_validation_state() or "Invalid"
            reader.close()
    except c2pa.C2paError as e:
        name = type(e).__name__
        if "ManifestNotFound" in name or "ManifestNotFound" in str(e) or "JumbfNotFound" in str(e):
            return ManifestReport("absent", None, None, [], None)
        if "NotSupported" in name or "could not be parsed" in str(e):
            # No manifest can be found in a container C2PA cannot read (mpg, damaged boxes): absent,
            # with the reason kept for the report.
            return ManifestReport("absent", None, None, [f"{name}: {e}"], None)
        return ManifestReport("Invalid", None, None, [f"{name}: {e}"], None)
    active = data.get("manifests", {}).get(data.get("active_manifest", ""), {})
    claims = _claims(active)
    errors = [f"{s.get('code')}: {s.get('explanation', '')}" for s in data.get("validation_status", []) or []]
    results = data.get("validation_results", {}).get("activeManifest", {})
    errors += [f"{s.get('code')}: {s.get('explanation', '')}" for s in results.get("failure", []) or []]
    signer = (active.get("signature_info") or {}).get("common_name") or (active.get("signature_info") or {}).get("issuer")
    return ManifestReport(state, claims, claims.get("watermark_payload"), errors, signer)


def mime_for_reading(path: Path) -> str:
    return MIME.get(path.suffix.lower(), "application/octet-stream")


def _claims(active: dict) -> dict:
    """The parts of the active manifest th reports: source type, agent, th facts, payload, training."""
    out: dict = {"title": active.get("title"), "claim_generator": active.get("claim_generator_info")}
    for a in active.get("assertions", []):
        label, data = a.get("label", ""), a.get("data", {})
        if label.startswith("c2pa.actions"):
            acts = data.get("actions", [])
            out["actions"] = [x.get("action") for x in acts]
            created = next((x for x in acts if x.get("action") == "c2pa.created"), {})
            out["digital_source_type"] = created.get("digitalSourceType")
            out["software_agent"] = created.get("softwareAgent")
        elif label == TH_ASSERTION:
            out["th"] = {k: v for k, v in data.items() if k != "watermark_payload"}
            out["watermark_payload"] = data.get("watermark_payload")
        elif label == "c2pa.soft-binding":
            out["soft_binding"] = data
            blocks = data.get("blocks") or [{}]
            out.setdefault("watermark_payload", blocks[0].get("value"))
        elif label in ("c2pa.training-mining", "cawg.training-mining"):
            out["training_mining"] = {k: v.get("use") for k, v in data.get("entries", {}).items()}
    si = active.get("signature_info") or {}
    out["signature"] = {"issuer": si.get("issuer"), "common_name": si.get("common_name"), "alg": si.get("alg"),
                        "time": si.get("time")}
    return out
