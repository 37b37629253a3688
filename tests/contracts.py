"""The published contracts the tests hold cdd to, fetched from their packages and cached.

A user who clones the project has only the project, so the tests fetch what they check
against themselves: GitHub's own OpenAPI description of its REST API (the npm package
`@octokit/openapi`) and Jenkins' JUnit schema (shipped in pytest's source distribution,
which validates its own reports against it). Each is pinned by package version and by the
SHA-256 of the file inside it, fetched with the registry's ordinary client at first use and
cached outside the repository. A contract that cannot be had is an error that says how to
get it, never a skip: a test that silently checks nothing proves nothing.

Cache: `$CDD_CONTRACTS_CACHE`, else `$XDG_CACHE_HOME/cdd-ci/contracts`, else
`~/.cache/cdd-ci/contracts`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FETCH_TIMEOUT = 600  # seconds; a cold pip download of an sdist prepares its metadata too


class ContractUnavailable(RuntimeError):
    """The pinned contract could not be fetched or did not match its checksum."""


@dataclass(frozen=True)
class Contract:
    name: str
    registry: str  # "npm" or "pypi"
    package: str
    version: str
    member: str  # path of the file inside the package's archive, below its top folder
    sha256: str

    @property
    def cached_name(self) -> str:
        return f"{self.name}-{self.version}-{self.sha256[:12]}{Path(self.member).suffix}"


GITHUB_OPENAPI = Contract(
    name="github-openapi", registry="npm", package="@octokit/openapi", version="23.0.2",
    member="generated/api.github.com.deref.json",
    sha256="a631e5d9cf86ad9711e1da69015589fb270cc0f17ff33731d22b5eae845219c2")
JUNIT_XSD = Contract(
    name="junit", registry="pypi", package="pytest", version="8.3.5",
    member="testing/example_scripts/junit-10.xsd",
    sha256="a1a816f58d1bf95ebabf371994df0b9246dee66ea9572fbec4f9296f1b2c0ff6")

# The operations the reporting uses (repository, issues, comments, labels, commits and
# compare, search, rate limit, the user). The full description is 70 MB; the server loads
# only these paths, cut from the verified file once and cached beside it.
GITHUB_EXACT = ("/repos/{owner}/{repo}", "/search/issues", "/rate_limit", "/user")
GITHUB_UNDER = tuple(f"/repos/{{owner}}/{{repo}}/{part}"
                     for part in ("issues", "labels", "commits", "compare"))


def cache_dir() -> Path:
    explicit = os.environ.get("CDD_CONTRACTS_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cdd-ci" / "contracts"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(contract: Contract, into: Path) -> Path:
    """The package's archive, by the registry's own client."""
    if contract.registry == "npm":
        command = ["npm", "pack", "--silent", f"{contract.package}@{contract.version}",
                   "--pack-destination", str(into)]
    else:
        command = ["python3", "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                   "--no-deps", "--no-binary", ":all:", f"{contract.package}=={contract.version}",
                   "-d", str(into)]
    if shutil.which(command[0]) is None:
        raise ContractUnavailable(f"{contract.name}: {command[0]} is not installed")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ContractUnavailable(f"{contract.name}: {' '.join(command)} took over "
                                  f"{FETCH_TIMEOUT} s") from exc
    archives = sorted(into.glob("*.tgz")) + sorted(into.glob("*.tar.gz"))
    if proc.returncode != 0 or not archives:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ContractUnavailable(f"{contract.name}: {' '.join(command)} failed "
                                  f"(exit {proc.returncode}): {' / '.join(tail)}")
    return archives[0]


def _extract(contract: Contract, archive: Path, to: Path) -> None:
    with tarfile.open(archive) as tar:
        for entry in tar:
            # npm packs under package/, an sdist under NAME-VERSION/
            if entry.isfile() and entry.name.split("/", 1)[-1] == contract.member:
                source = tar.extractfile(entry)
                assert source is not None
                with source, to.open("wb") as out:
                    shutil.copyfileobj(source, out)
                return
    raise ContractUnavailable(f"{contract.name}: {archive.name} has no {contract.member}")


def path_of(contract: Contract) -> Path:
    """The verified file, fetched on first use."""
    target = cache_dir() / contract.cached_name
    if target.is_file() and _sha256(target) == contract.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        staged = Path(tmp) / "member"
        _extract(contract, _download(contract, Path(tmp)), staged)
        got = _sha256(staged)
        if got != contract.sha256:
            raise ContractUnavailable(
                f"{contract.name}: {contract.package} {contract.version} {contract.member} has "
                f"SHA-256 {got}, pinned {contract.sha256}: not used")
        staged.replace(target)  # atomic: a concurrent test run sees the whole file or none
    return target


def github_openapi() -> Path:
    """GitHub's description cut to the paths the reporting uses (cached, derived from the
    verified file, so its name carries the source's checksum)."""
    subset = cache_dir() / f"github-openapi-{GITHUB_OPENAPI.version}-" \
        f"{GITHUB_OPENAPI.sha256[:12]}-subset.json"
    if subset.is_file():
        return subset
    document: dict[str, Any] = json.loads(path_of(GITHUB_OPENAPI).read_text(encoding="utf-8"))
    paths = {template: item for template, item in document["paths"].items()
             if template in GITHUB_EXACT
             or any(template == p or template.startswith(p + "/") for p in GITHUB_UNDER)}
    staged = subset.with_suffix(f".{os.getpid()}.tmp")
    staged.write_text(json.dumps({"openapi": document["openapi"], "info": document["info"],
                                  "paths": paths}), encoding="utf-8")
    staged.replace(subset)
    return subset


def junit_xsd() -> Path:
    return path_of(JUNIT_XSD)
