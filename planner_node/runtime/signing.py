"""Signed bundles: a detached Ed25519 signature over ``manifest.yaml``'s bytes.

The manifest already pins every file of a bundle by sha256, so a signature over its exact bytes
covers the whole bundle (as TUF and Uptane sign metadata, not images). The signature lives next
to it in ``manifest.sig``::

    {"signatures": [{"key_id": "<16 hex>", "algorithm": "ed25519", "signature": "<base64>"}]}

A bundle may carry several signatures (one per signing key); it is trusted when one of them is
by a trusted key and verifies. Keys are PEM files: ``NAME.key`` (PKCS#8, private, mode 0600)
and ``NAME.pub`` (SubjectPublicKeyInfo). A key's id is the first 16 hex digits of the sha256 of
its raw 32-byte public key. The cryptography is the ``cryptography`` package's, not ours.

Nothing here parses the manifest: ``verify`` checks bytes, and the caller parses the same bytes
afterwards, so what is verified is what is loaded.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

SIGNATURE_FILE = "manifest.sig"
ALGORITHM = "ed25519"
SIGNATURE_KEYS = frozenset(("key_id", "algorithm", "signature"))
#: A signature file larger than this is not one (a few signatures are ~200 bytes each).
MAX_SIGNATURE_FILE_BYTES = 64 * 1024


class SignatureError(ValueError):
    """A bundle's signature is missing, by an unknown key, or does not verify. ``reason`` is a
    short name for diagnostics counters: unsigned, unknown_key, bad_signature, malformed."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    return serialization, ed25519


def _raw_public(public_key) -> bytes:
    serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key) -> str:
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def generate_keypair(out_dir: str | Path, name: str = "bundle_signing") -> tuple[Path, Path]:
    """Write ``NAME.key`` (private, 0600) and ``NAME.pub`` under ``out_dir``; refuses to
    overwrite an existing key (a lost signing key cannot be recovered)."""
    serialization, ed25519 = _crypto()
    from planner_node.atomic import write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists():
            raise FileExistsError(f"{p}: exists; refusing to overwrite a key (choose another --name or --out)")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # created 0600 before the bytes go in: the private key is never readable by others
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    write_text(pub_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    return priv_path, pub_path


def load_private_key(path: str | Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
    return key


def load_public_key(path: str | Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a PEM public key ({e})") from e
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
    return key


@dataclass(frozen=True)
class TrustStore:
    """The public keys a node or a verifier trusts, by key id."""

    keys: dict   # key id -> Ed25519PublicKey
    files: tuple[str, ...] = ()

    @classmethod
    def from_files(cls, paths) -> TrustStore:
        paths = [str(p) for p in paths]
        if not paths:
            raise ValueError("trusted keys: no public key files given")
        keys = {}
        for p in paths:
            k = load_public_key(p)
            keys[key_id(k)] = k
        return cls(keys, tuple(paths))

    def describe(self) -> str:
        return ", ".join(f"{k} ({Path(f).name})" for k, f in zip(self.keys, self.files)) or "none"


def read_signatures(sig_path: Path) -> list[dict]:
    """``manifest.sig``'s signatures, checked for shape; [] when the file is absent."""
    if not sig_path.is_file():
        return []
    if sig_path.stat().st_size > MAX_SIGNATURE_FILE_BYTES:
        raise SignatureError(f"{sig_path}: larger than {MAX_SIGNATURE_FILE_BYTES} bytes: not a signature file",
                             "malformed")
    try:
        doc = json.loads(sig_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise SignatureError(f"{sig_path}: not JSON ({e})", "malformed") from e
    if not isinstance(doc, dict) or set(doc) != {"signatures"} or not isinstance(doc["signatures"], list):
        raise SignatureError(f"{sig_path}: expected {{\"signatures\": [...]}} and nothing else", "malformed")
    for i, s in enumerate(doc["signatures"]):
        if not isinstance(s, dict) or set(s) != SIGNATURE_KEYS:
            raise SignatureError(f"{sig_path}: signatures[{i}]: expected exactly the keys {sorted(SIGNATURE_KEYS)}",
                                 "malformed")
        if s["algorithm"] != ALGORITHM:
            raise SignatureError(f"{sig_path}: signatures[{i}].algorithm: {s['algorithm']!r}; only "
                                 f"{ALGORITHM!r} is accepted", "malformed")
    return doc["signatures"]


def sign_manifest(bundle_dir: str | Path, private_key_path: str | Path) -> str:
    """Add (or replace) this key's signature over ``bundle_dir/manifest.yaml``; returns the key id.
    Signatures by other keys over the same bytes are kept; ones over other bytes are dropped
    (they no longer verify)."""
    from planner_node.atomic import write_text

    root = Path(bundle_dir)
    manifest = (root / "manifest.yaml").read_bytes()
    key = load_private_key(private_key_path)
    kid = key_id(key.public_key())
    sig_path = root / SIGNATURE_FILE
    kept = []
    for s in read_signatures(sig_path):
        if s["key_id"] == kid:
            continue
        kept.append(s)
    sig = base64.b64encode(key.sign(manifest)).decode()
    kept.append({"key_id": kid, "algorithm": ALGORITHM, "signature": sig})
    write_text(sig_path, json.dumps({"signatures": kept}, indent=1) + "\n")
    return kid


def verify(manifest_bytes: bytes, sig_path: Path, trust: TrustStore) -> str:
    """The id of a trusted key whose signature over ``manifest_bytes`` verifies, or SignatureError."""
    from cryptography.exceptions import InvalidSignature

    signatures = read_signatures(sig_path)
    if not signatures:
        raise SignatureError(f"{sig_path.parent}: unsigned (no {SIGNATURE_FILE}); this node trusts only bundles "
                             f"signed by {trust.describe()}", "unsigned")
    bad = []
    for s in signatures:
        key = trust.keys.get(s["key_id"])
        if key is None:
            continue
        try:
            raw = base64.b64decode(s["signature"], validate=True)
            key.verify(raw, manifest_bytes)
            return s["key_id"]
        except (InvalidSignature, ValueError):
            bad.append(s["key_id"])
    if bad:
        raise SignatureError(f"{sig_path.parent}: the signature by trusted key {bad[0]} does not verify over "
                             "manifest.yaml: the manifest changed after signing (or the signature was copied "
                             "from another manifest)", "bad_signature")
    ids = ", ".join(s["key_id"] for s in signatures)
    raise SignatureError(f"{sig_path.parent}: signed by an unknown key ({ids}); trusted: {trust.describe()}",
                         "unknown_key")
