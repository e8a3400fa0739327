"""Building arrl's sandbox images on the local Docker engine, without a registry.

- `arrl-sandbox-host:<hash>` (docker/sandbox-host): a near-empty root file system that the
  Docker sandbox fills with the host's /usr, Python installation and venv, mounted
  read-only. Builds in a fraction of a second anywhere; not self-contained.
- `arrl-sandbox:cpu` (docker/sandbox-cpu), also tagged `arrl-sandbox:cpu-<hash>`:
  self-contained, built offline. debootstrap makes a minimal Debian bookworm with its
  python3 (3.11) from the host's Debian mirror, imported into the engine as
  `arrl-base:bookworm`; then a `docker build` with network "none" installs the host venv's
  exact torch, numpy and pyarrow (and their dependencies) from wheels that `pip download`
  gathered on the host. The hash covers the Dockerfile, the base's recipe and the wheel
  pins: a changed recipe builds a new image, an unchanged one is not rebuilt. Needs root
  (debootstrap; installed with apt-get when missing).

Not covered: `arrl-sandbox:cuda` (docker/sandbox) and `arrl-node` (docker/node) come from
registries and are built with plain `docker build` on a machine that reaches them.

    arrl image build [--quiet]    builds (or finds) the CPU one and prints its tag
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib import metadata
from pathlib import Path

from docker.errors import DockerException, NotFound
from requests.exceptions import RequestException
from tqdm import tqdm

from arrl import paths

HOST_SANDBOX_REPO = "arrl-sandbox-host"
CPU_SANDBOX_REPO = "arrl-sandbox"
CPU_SANDBOX = f"{CPU_SANDBOX_REPO}:cpu"
BASE_REPO, BASE_SUITE = "arrl-base", "bookworm"
BASE = f"{BASE_REPO}:{BASE_SUITE}"
BASE_PACKAGES = ("python3",)  # Debian bookworm's python3 is 3.11, like arrl's venv
IMAGE_PYTHON = "3.11"
WHEEL_ROOTS = ("torch", "numpy", "pyarrow")  # what env/ and the targets import while training
DEFAULT_MIRROR = "http://deb.debian.org/debian"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# the base never runs apt: its package cache and lists are left out of the image
_ROOTFS_REMOVE = ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*")


class ImageBuildError(RuntimeError):
    """An image could not be built; the message says which step failed and why."""


def docker_dir() -> Path:
    return paths.checkout() / "docker"


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"images: {msg}", file=sys.stderr, flush=True)


def _bar(progress: bool, **kw) -> tqdm:
    return tqdm(disable=not progress, file=sys.stderr, dynamic_ncols=True, **kw)


# ---- the host-mount image --------------------------------------------------------------
def _host_rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, kind: bytes, mode: int = 0o755, target: str = "", data: bytes = b""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 0
            if kind == tarfile.SYMTYPE:
                info.linkname = target
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
        for link, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            add(link, tarfile.SYMTYPE, 0o777, target)
        # a real /sbin: the engine mounts its init (docker-init) there, which a link into the
        # read-only /usr mount would refuse
        for d in ("sbin", "tmp", "etc", "arrl", "arrl/env", "arrl/data", "arrl/work", "usr", "proc", "dev", "sys"):
            add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        add("etc/passwd", tarfile.REGTYPE, 0o644, data=b"root:x:0:0::/root:/bin/false\n"
                                                       b"nobody:x:65534:65534::/arrl/work:/bin/false\n")
        add("etc/group", tarfile.REGTYPE, 0o644, data=b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


def host_sandbox_tag() -> str:
    spec = (docker_dir() / "sandbox-host" / "Dockerfile").read_bytes() + _host_rootfs()
    return f"{HOST_SANDBOX_REPO}:{hashlib.sha256(spec).hexdigest()[:12]}"


def build_host_sandbox(client) -> str:
    """Build the host-mount sandbox image once per content hash; returns its tag."""
    tag = host_sandbox_tag()
    if _exists(client, tag):
        return tag
    ctx = io.BytesIO()
    with tarfile.open(fileobj=ctx, mode="w") as tar:
        for name, data in (("Dockerfile", (docker_dir() / "sandbox-host" / "Dockerfile").read_bytes()),
                           ("rootfs.tar", _host_rootfs())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ctx.seek(0)
    try:
        client.images.build(fileobj=ctx, custom_context=True, tag=tag, rm=True, forcerm=True)
    except DockerException as e:
        raise ImageBuildError(f"building the sandbox image {tag} failed: {e}") from None
    return tag


def _exists(client, tag: str):
    try:
        return client.images.get(tag)
    except NotFound:
        return None
    except (DockerException, RequestException) as e:
        raise ImageBuildError(f"the Docker engine did not answer about {tag}: {e}") from None


# ---- the base: debootstrap + import -----------------------------------------------------
def base_spec() -> str:
    recipe = {"suite": BASE_SUITE, "variant": "minbase", "include": BASE_PACKAGES, "remove": _ROOTFS_REMOVE}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's Debian mirror (a `bookworm` entry first, then any `.../debian`); ARRL_DEBIAN_MIRROR wins."""
    if os.environ.get("ARRL_DEBIAN_MIRROR"):
        return os.environ["ARRL_DEBIAN_MIRROR"]
    entries = []  # (uri, suites)
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for f in files:
        if f.is_file():
            for line in f.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # drop [options]
                if len(words) >= 3 and words[0] == "deb":
                    entries.append((words[1], [words[2]]))
    for f in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text(errors="replace")):
            fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes").lower() != "no":
                entries += [(uri, fields.get("Suites", "").split()) for uri in fields.get("URIs", "").split()]
    web = [(u.rstrip("/"), s) for u, s in entries if u.startswith(("http://", "https://"))]
    for uri, suites in web:
        if BASE_SUITE in suites:
            return uri
    for uri, _ in web:
        if uri.endswith("/debian"):
            return uri
    return DEFAULT_MIRROR


def _ensure_debootstrap(progress: bool) -> str:
    if os.geteuid() != 0:
        raise ImageBuildError("building the CPU sandbox image needs root (debootstrap creates device files)")
    found = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if found:
        return found
    if not shutil.which("apt-get"):
        raise ImageBuildError("debootstrap is missing and there is no apt-get to install it")
    _say(progress, "installing debootstrap (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "debootstrap"]
    if subprocess.run(install, env=env, check=False, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
        r = subprocess.run(install, env=env, check=False, capture_output=True, text=True)
        if r.returncode != 0:
            raise ImageBuildError(f"apt-get install debootstrap failed: {r.stderr.strip()[-400:]}")
    return shutil.which("debootstrap", path="/usr/sbin:/sbin:/usr/bin:/bin")


def _debootstrap(exe: str, rootfs: Path, mirror: str, progress: bool) -> None:
    cmd = [exe, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, str(rootfs), mirror]
    _say(progress, f"debootstrap {BASE_SUITE} (+{','.join(BASE_PACKAGES)}) from {mirror}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    n_packages, listing, installing = 0, False, False
    with _bar(progress, desc="debootstrap: download", unit="pkg") as bar:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if line.startswith("I: Checking component"):
                listing = True  # per-package lines follow
            m = re.match(r"I: (Retrieving|Extracting|Unpacking|Configuring) (.+)", line)
            if not (m and listing):
                continue
            step, what = m.groups()
            if step == "Retrieving":
                n_packages += 1
            elif not installing:  # each package is now extracted, unpacked and configured
                installing = True
                bar.unit = "step"
                bar.set_description("debootstrap: install")
                bar.reset(total=3 * n_packages)
            bar.update()
            bar.set_postfix_str(what.strip().rstrip("."), refresh=False)
        if proc.wait() == 0 and bar.total:
            bar.update(bar.total - bar.n)  # a few packages skip a step
    if proc.returncode != 0:
        raise ImageBuildError(f"debootstrap failed (exit code {proc.returncode}):\n" + "\n".join(tail))


def _import(client, rootfs: Path, spec: str, progress: bool) -> None:
    for pattern in _ROOTFS_REMOVE:
        for p in rootfs.glob(pattern):
            if p.is_file() and not p.is_symlink():
                p.unlink()
    total = 0  # the tar stream's size: a 512-byte header per entry, file data in 512-byte blocks
    for d, dirs, files in os.walk(rootfs):
        total += 512 * (1 + len(dirs))
        total += sum(512 + -(-os.lstat(os.path.join(d, f)).st_size // 512) * 512 for f in files)
    partial = f"partial-{spec}"  # imported under this tag, renamed to the base only when complete
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _say(progress, f"importing the root file system as {BASE}")
    with _bar(progress, desc=f"import {BASE}", total=total, unit="B", unit_scale=True) as bar:
        def chunks():
            while block := tar.stdout.read(1 << 20):
                bar.update(len(block))
                yield block
        try:
            answer = client.api.import_image(src=chunks(), repository=BASE_REPO, tag=partial, stream_src=True,
                                             changes=[f"LABEL arrl.base={spec}", 'CMD ["/bin/bash"]'])
        except (DockerException, RequestException) as e:
            tar.kill()
            raise ImageBuildError(f"docker import of the base failed: {e}") from None
        bar.total = bar.n  # the header estimate is close, not exact
    if tar.wait() != 0:
        _untag(client, f"{BASE_REPO}:{partial}")
        raise ImageBuildError(f"tar of the base root file system failed: {tar.stderr.read().decode()[-400:]}")
    if '"error' in str(answer):
        _untag(client, f"{BASE_REPO}:{partial}")
        raise ImageBuildError(f"docker import of the base failed: {str(answer)[-400:]}")
    # only a complete import becomes the base (a torn one under the real tag would be reused forever)
    try:
        client.images.get(f"{BASE_REPO}:{partial}").tag(BASE_REPO, BASE_SUITE)
    except (DockerException, RequestException) as e:
        raise ImageBuildError(f"tagging the base {BASE} failed: {e}") from None
    _untag(client, f"{BASE_REPO}:{partial}")


def _untag(client, tag: str) -> None:
    try:
        client.images.remove(tag)
    except (DockerException, RequestException):
        pass


def _remove_tree(path: Path) -> None:
    """rm -rf, after unmounting whatever a failed debootstrap left mounted inside (proc, sys)."""
    for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
        point = line.split()[1]
        if point.startswith(f"{path}/"):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def build_base(client, progress: bool = True) -> str:
    """`arrl-base:bookworm`: minimal Debian with python3, by debootstrap; skipped when built from the same recipe."""
    spec = base_spec()
    image = _exists(client, BASE)
    if image is not None and image.labels.get("arrl.base") == spec:
        return BASE
    exe = _ensure_debootstrap(progress)
    work = Path(tempfile.mkdtemp(prefix="arrl-base-"))
    try:
        _debootstrap(exe, work / "rootfs", debian_mirror(), progress)
        _import(client, work / "rootfs", spec, progress)
    finally:
        _remove_tree(work)
    return BASE


# ---- the self-contained CPU image -------------------------------------------------------
def wheel_pins(roots=WHEEL_ROOTS) -> dict[str, str]:
    """{distribution: version} of `roots` and everything they require, as installed in this venv."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in pins:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ImageBuildError(f"{name} is not installed in {sys.prefix}; run scripts/setup.sh") from None
        pins[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return dict(sorted(pins.items()))


def cpu_sandbox_tag(pins: dict[str, str] | None = None) -> str:
    pins = wheel_pins() if pins is None else pins
    spec = (docker_dir() / "sandbox-cpu" / "Dockerfile").read_bytes() + json.dumps(
        {"base": base_spec(), "pins": pins, "python": IMAGE_PYTHON, "arch": platform.machine()}, sort_keys=True).encode()
    return f"{CPU_SANDBOX_REPO}:cpu-{hashlib.sha256(spec).hexdigest()[:12]}"


def _download_wheels(pins: dict[str, str], dest: Path, progress: bool) -> None:
    """Wheels for the image's Python and glibc (bookworm: 2.36), whatever the host runs."""
    arch = platform.machine()
    platforms = [f"manylinux_2_{minor}_{arch}" for minor in range(17, 37)] + [f"manylinux2014_{arch}"]
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
           "--only-binary=:all:", "--python-version", IMAGE_PYTHON, "--implementation", "cp",
           "--abi", "cp" + IMAGE_PYTHON.replace(".", ""), *[a for p in platforms for a in ("--platform", p)],
           "-d", str(dest), *[f"{n}=={v}" for n, v in pins.items()], f"pip=={metadata.version('pip')}"]
    if not progress:
        cmd.append("-q")
    _say(progress, f"gathering {len(pins) + 1} wheels (pip download)")
    r = subprocess.run(cmd, check=False, capture_output=not progress, text=True)
    if r.returncode != 0 and any("+" in v for v in pins.values()):
        # a local build such as torch 2.13.0+cpu lives on PyTorch's index where pip has no copy of it
        _say(progress, f"retrying with {TORCH_CPU_INDEX}")
        r = subprocess.run(cmd + ["--extra-index-url", TORCH_CPU_INDEX], check=False, capture_output=not progress,
                           text=True)
    if r.returncode != 0:
        raise ImageBuildError(f"pip download of the sandbox's wheels failed (exit code {r.returncode})"
                              + (f":\n{r.stderr[-800:]}" if r.stderr else ""))


def _docker_build(client, context: Path, tag: str, progress: bool) -> None:
    tar_path = context.parent / "context.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(context, arcname=".")
    _say(progress, f"docker build {tag} (network none)")
    tail: list[str] = []
    with open(tar_path, "rb") as ctx, _bar(progress, desc="docker build", unit="step") as bar:
        try:
            for item in client.api.build(fileobj=ctx, custom_context=True, tag=tag, rm=True, forcerm=True,
                                         network_mode="none", buildargs={"BASE": BASE}, decode=True):
                if "error" in item:
                    raise ImageBuildError(f"docker build {tag} failed: {item['error'].strip()}\n" + "\n".join(tail))
                text = re.sub(r"\x1b\[[0-9;]*m", "", item.get("stream", "")).strip()
                if not text:
                    continue
                tail = (tail + [text])[-20:]
                m = re.match(r"Step (\d+)/(\d+) : (.*)", text)
                if m:
                    bar.total = int(m[2])
                    bar.n = int(m[1]) - 1
                    bar.set_postfix_str(m[3][:60], refresh=False)
                    bar.refresh()
        except (DockerException, RequestException) as e:
            raise ImageBuildError(f"docker build {tag} failed: {e}") from None
        bar.n = bar.total or bar.n
        bar.refresh()


def build_cpu_sandbox(client, progress: bool = True) -> str:
    """Build `arrl-sandbox:cpu` (see the module docstring) unless its content-hash tag exists; returns that tag."""
    pins = wheel_pins()
    tag = cpu_sandbox_tag(pins)
    image = _exists(client, tag)
    if image is None:
        build_base(client, progress)
        work = Path(tempfile.mkdtemp(prefix="arrl-image-"))
        try:
            context = work / "context"
            (context / "wheels").mkdir(parents=True)
            shutil.copy(docker_dir() / "sandbox-cpu" / "Dockerfile", context / "Dockerfile")
            _download_wheels(pins, context / "wheels", progress)
            (context / "wheels" / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
            _docker_build(client, context, tag, progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        try:  # the build stage (wheels + installed tree, ~1.5 GB) is no longer needed
            client.images.prune(filters={"dangling": True, "label": "arrl.stage=build"})
        except (DockerException, RequestException):
            pass
        image = client.images.get(tag)
    if CPU_SANDBOX not in image.tags:
        image.tag(CPU_SANDBOX_REPO, "cpu")
    return tag

