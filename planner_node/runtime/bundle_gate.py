"""Which bundles a deployed node accepts (the node's ``trusted_keys`` and ``bundle_root``).

- ``bundle_root``: the bundle's real path (symlinks resolved) must lie under this directory.
- ``trusted_keys``: the manifest must carry a signature by one of these keys that verifies over
  its exact bytes (``signing.py``); the manifest then pins every other file by sha256.
- rollback (with ``trusted_keys``): a bundle whose ``bundle_version`` is lower than the running
  bundle's is refused, as Uptane refuses older metadata. Equal versions swap freely (two bundles
  of one release, e.g. the chunk policy and H-GAP).

Each refusal is a ``BundleRefused`` whose ``reason`` is a diagnostics counter name.
"""
from __future__ import annotations

from pathlib import Path

from planner_node.runtime.bundle import Bundle, BundleError, BundleSignatureError, load_bundle

#: Every reason a gate refuses a bundle for (the node's /diagnostics lists each counter).
REASONS = ("invalid", "unsigned", "unknown_key", "bad_signature", "malformed_signature", "rollback",
           "outside_bundle_root")


class BundleRefused(BundleError):
    def __init__(self, message: str, reason: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason = reason


def split_paths(text: str) -> list[str]:
    """``trusted_keys``' value: comma-separated paths ('' = none)."""
    return [p.strip() for p in str(text or "").split(",") if p.strip()]


class BundleGate:
    """``trusted_keys``: public key files (relative ones resolve against ``base``, the package's
    share directory); empty = no signature required. ``bundle_root``: '' = any directory."""

    def __init__(self, trusted_keys: list[str] | tuple[str, ...] = (), bundle_root: str = "",
                 base: Path | None = None):
        self.trust = None
        if trusted_keys:
            from planner_node.runtime.signing import TrustStore
            paths = [Path(p) if Path(p).is_absolute() or base is None else base / p for p in trusted_keys]
            for p in paths:
                if not p.is_file():
                    raise ValueError(f"trusted_keys: {p}: no such public key file")
            self.trust = TrustStore.from_files(paths)
        self.root = Path(bundle_root).resolve() if bundle_root else None
        if self.root is not None and not self.root.is_dir():
            raise ValueError(f"bundle_root: {bundle_root}: not a directory")

    @property
    def signed_only(self) -> bool:
        return self.trust is not None

    def describe(self) -> str:
        trust = f"signed by {self.trust.describe()}" if self.trust else "unsigned allowed"
        return f"{trust}; bundle_root {self.root or 'any'}"

    def check(self, path: str | Path, running_version: int | None = None, check_graphs: bool = False) -> Bundle:
        """The bundle at ``path``, loaded and verified, or ``BundleRefused`` naming why."""
        real = Path(path).resolve()
        if self.root is not None and not real.is_relative_to(self.root):
            raise BundleRefused(f"{path}: resolves to {real}, outside bundle_root {self.root}", "outside_bundle_root")
        try:
            bundle = load_bundle(real, check_graphs=check_graphs, trust=self.trust)
        except BundleSignatureError as e:
            raise BundleRefused(str(e), "malformed_signature" if e.reason == "malformed" else e.reason) from e
        except (BundleError, OSError) as e:
            raise BundleRefused(str(e), "invalid") from e
        if self.trust is not None and running_version is not None and bundle.version < running_version:
            raise BundleRefused(f"{path}: bundle_version {bundle.version} is older than the running bundle's "
                                f"{running_version} (rollback refused)", "rollback")
        return bundle
