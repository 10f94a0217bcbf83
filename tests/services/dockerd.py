"""A real Docker engine for the docker executor tests, and test images built without a registry.

`DockerEngine.start()` uses the engine DOCKER_HOST (or the default socket)
names when it answers; otherwise, as root with Debian's docker.io installed,
it starts `dockerd` itself and stops it again at the end.  Nothing can be
pulled in the test environment, so the images are made here from files of
this machine and imported (`docker import` of a root file system):

    busybox   a static busybox with its applets linked in /bin (sh, cat, tr...)
    nosh      a static busybox and nothing else: no /bin/sh
    python    busybox plus this machine's Python 3, its standard library and
              the shared libraries the interpreter and its extension modules
              load (found with ldd), at the paths they have here

Each is tagged with a hash of what went into it, so a second session (the
engine keeps its images) reuses them at once.  A static busybox comes from
/bin/busybox when that one is static, else from Debian's busybox-static
package (`apt-get download`, no install).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

from .common import Unavailable

BUILD_VERSION = "1"  # bump to rebuild every test image
PASSWD = b"root:x:0:0:root:/root:/bin/sh\ndpl:x:1000:1000:dpl:/tmp:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
GROUP = b"root:x:0:\ndpl:x:1000:\nnogroup:x:65534:\n"


class DockerEngine:
    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.proc: subprocess.Popen | None = None
        self.client = None
        self.images: dict[str, str] = {}

    # ----------------------------------------------------------------- engine

    def start(self) -> None:
        if importlib.util.find_spec("docker") is None:
            raise Unavailable("docker-py is not installed (pip install 'dpl[docker]')")
        if self._answers():
            return
        if os.environ.get("DOCKER_HOST"):
            raise Unavailable(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
        dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin:/sbin")
        if not dockerd:
            raise Unavailable("dockerd is not installed (tests/services/install.sh installs Debian's docker.io)")
        if os.geteuid() != 0:
            raise Unavailable("no Docker engine is running and only root can start dockerd here")
        self.log_path = os.path.join(self.workdir, "dockerd.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [dockerd, "--host", "unix:///var/run/docker.sock", "--pidfile", os.path.join(self.workdir, "dockerd.pid")],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"dockerd exited with code {self.proc.returncode}: {self._log_tail()}")
            if self._answers():
                return
            time.sleep(0.3)
        self.stop()
        raise Unavailable(f"dockerd did not answer within 60 s: {self._log_tail()}")

    def _answers(self) -> bool:
        import docker

        try:  # from_env asks the engine for its API version: it fails until the engine answers
            self.client = docker.from_env(timeout=300)
            return bool(self.client.ping())
        except Exception:
            return False

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-600:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop dockerd if this object started it (an engine that was running stays so)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def dpl_containers(self) -> list:
        """Containers the docker executor made that still exist."""
        return self.client.containers.list(all=True, filters={"label": "dpl.executor"})

    # ----------------------------------------------------------------- images

    def build_test_images(self) -> dict[str, str]:
        busybox = static_busybox(self.workdir)
        with open(busybox, "rb") as f:
            bb_hash = hashlib.sha256(f.read()).hexdigest()
        self.images["busybox"] = self._cached(
            "dpl-test/busybox", bb_hash, lambda: busybox_rootfs(busybox, with_shell=True)
        )
        self.images["nosh"] = self._cached("dpl-test/nosh", bb_hash, lambda: busybox_rootfs(busybox, with_shell=False))
        python, version = host_python()
        self.images["python"] = self._cached(
            "dpl-test/python", bb_hash + python + version, lambda: python_rootfs(busybox, python)
        )
        return self.images

    def notebook_image(self) -> str:
        """`python` plus papermill, ipykernel and what they need, from this venv: for notebook steps.

        Built on first use rather than with the others: only tests/test_notebooks.py needs it, and it is
        the largest (about 45 MB)."""
        if "notebook" not in self.images:
            busybox = static_busybox(self.workdir)
            python, version = host_python()
            dists = notebook_distributions()
            with open(busybox, "rb") as f:
                key = NOTEBOOK_BUILD + hashlib.sha256(f.read()).hexdigest() + python + version + " ".join(f"{d.name}=={d.version}" for d in dists)
            self.images["notebook"] = self._cached("dpl-test/notebook", key, lambda: notebook_rootfs(busybox, python, dists))
        return self.images["notebook"]

    def _cached(self, repo: str, key: str, make) -> str:
        import docker

        tag = f"{repo}:{hashlib.sha256((BUILD_VERSION + key).encode()).hexdigest()[:12]}"
        try:
            self.client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        self.import_rootfs(make(), tag)
        return tag

    def import_rootfs(self, tar_bytes: bytes, tag: str) -> str:
        """`docker import` of a root file system; returns the new image id."""
        repo, _, version = tag.rpartition(":")
        self.client.api.import_image_from_data(
            tar_bytes, repository=repo, tag=version, changes=["ENV PATH=/usr/local/bin:/usr/bin:/bin", "WORKDIR /"]
        )
        return self.client.images.get(tag).id


# --------------------------------------------------------------- root file systems


def static_busybox(workdir: str) -> str:
    """A statically linked busybox: the host's, or one from Debian's busybox-static package."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate) and _is_static(candidate):
            return candidate
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise Unavailable("no static busybox here and no apt-get to fetch busybox-static")
    where = tempfile.mkdtemp(prefix="busybox-", dir=workdir)
    got = subprocess.run(["apt-get", "download", "busybox-static"], cwd=where, capture_output=True, text=True)
    debs = glob.glob(os.path.join(where, "busybox-static_*.deb"))
    if got.returncode != 0 or not debs:
        raise Unavailable(f"apt-get download busybox-static failed: {got.stderr.strip()[-300:]}")
    subprocess.run(["dpkg", "-x", debs[0], os.path.join(where, "root")], check=True)
    path = os.path.join(where, "root", "bin", "busybox")
    if not os.path.exists(path):
        raise Unavailable("busybox-static did not hold bin/busybox")
    return path


def _is_static(path: str) -> bool:
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    return out.returncode != 0 or "not a dynamic executable" in (out.stdout + out.stderr) or "statically linked" in out.stdout


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    tar.addfile(info)


def _busybox_layer(tar: tarfile.TarFile, busybox: str, with_shell: bool, extra: dict[str, bytes] | None = None) -> None:
    for d in ("bin", "etc", "usr", "usr/bin", "root", "var"):
        _add_dir(tar, d)
    _add_dir(tar, "tmp", 0o1777)
    with open(busybox, "rb") as f:
        _add_bytes(tar, "bin/busybox", f.read(), 0o755)
    if with_shell:
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type = tarfile.SYMTYPE
                info.linkname = "busybox"
                tar.addfile(info)
    _add_bytes(tar, "etc/passwd", PASSWD)
    _add_bytes(tar, "etc/group", GROUP)
    for name, data in (extra or {}).items():
        _add_bytes(tar, name, data)


def busybox_rootfs(busybox: str, *, with_shell: bool = True, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _busybox_layer(tar, busybox, with_shell, extra)
    return buf.getvalue()


def host_python() -> tuple[str, str]:
    """The Python to put in the image: Debian's /usr/bin/python3 if there is one, else this one."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if candidate and os.path.exists(candidate):
            path = os.path.realpath(candidate)
            out = subprocess.run([path, "-c", "import sys; print(sys.version)"], capture_output=True, text=True)
            if out.returncode == 0:
                return path, out.stdout.strip()
    raise Unavailable("no Python 3 interpreter to put in the test image")


def _libraries(binary: str) -> set[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    libs = set()
    for line in out.stdout.splitlines():
        parts = line.split()
        if "=>" in parts:
            i = parts.index("=>")
            if i + 1 < len(parts) and parts[i + 1].startswith("/"):
                libs.add(parts[i + 1])
        elif parts and parts[0].startswith("/"):
            libs.add(parts[0])  # the dynamic loader
    return libs


def python_rootfs(busybox: str, python: str) -> bytes:
    info = subprocess.run(
        [python, "-c", "import sysconfig; p = sysconfig.get_paths(); print(p['stdlib']); print(p['platstdlib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    stdlib_dirs = sorted(set(info))
    skip = {"test", "tests", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "site-packages", "dist-packages", "pydoc_data"}
    libs = _libraries(python)
    for d in stdlib_dirs:
        for so in glob.glob(os.path.join(d, "lib-dynload", "*.so")):
            libs |= _libraries(so)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _busybox_layer(tar, busybox, with_shell=True)
        added: set[str] = {"bin", "etc", "usr", "usr/bin", "root", "var", "tmp"}

        def add_file(path: str) -> None:
            name = path.lstrip("/")
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in added:
                    _add_dir(tar, d)
                    added.add(d)
            if name not in added:
                tar.add(os.path.realpath(path), arcname=name, recursive=False)
                added.add(name)

        add_file(python)
        for lib in sorted(libs):
            add_file(lib)
        for d in stdlib_dirs:
            for root, dirs, files in os.walk(d):
                dirs[:] = sorted(x for x in dirs if x not in skip)
                for f in sorted(files):
                    p = os.path.join(root, f)
                    if os.path.isfile(p):
                        add_file(p)
        for alias in ("usr/bin/python3", "usr/bin/python"):
            if alias != python.lstrip("/"):
                link = tarfile.TarInfo(alias)
                link.type = tarfile.SYMTYPE
                link.linkname = python
                tar.addfile(link)
    return buf.getvalue()


# What a notebook step's image needs: papermill and a kernel.  Left out: debugpy and jedi (with parso), a
# debugger and completions, which a batch run does not use and ipykernel and IPython do without (35 MB).
NOTEBOOK_ROOTS = ("papermill", "ipykernel")
NOTEBOOK_BUILD = "2"  # bump to rebuild the notebook image
NOTEBOOK_SKIP = {"debugpy", "jedi", "parso"}


def notebook_distributions() -> list:
    """The installed distributions papermill and ipykernel need, by their requirements (markers evaluated here)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    found: dict = {}
    todo = list(NOTEBOOK_ROOTS)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in found or name in NOTEBOOK_SKIP:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise Unavailable(f"{name} is not installed (pip install -e '.[notebooks]')") from None
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(found.values(), key=lambda d: d.metadata["Name"].lower())


def notebook_rootfs(busybox: str, python: str, dists: list) -> bytes:
    """python_rootfs plus the distributions' files in the image Python's site directory, and the shared
    libraries their extension modules load from the system (their own, like pyzmq's libzmq, come with them)."""
    site_dir = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                              capture_output=True, text=True, check=True).stdout.strip().lstrip("/")
    files: dict[str, str] = {}  # name in the image -> host path
    for dist in dists:
        root = os.path.realpath(dist.locate_file(""))
        for rel in dist.files or []:
            host = os.path.realpath(dist.locate_file(rel))
            if host.startswith(root + os.sep) and os.path.isfile(host):  # not the console scripts in bin/
                files[f"{site_dir}/{os.path.relpath(host, root)}"] = host
    libs = set()
    for host in files.values():
        if ".so" in os.path.basename(host):
            libs |= {lib for lib in _libraries(host) if "-packages/" not in lib}
    buf = io.BytesIO(python_rootfs(busybox, python))
    with tarfile.open(fileobj=buf, mode="a") as tar:
        added = set(tar.getnames())
        for lib in sorted(libs):
            files.setdefault(lib.lstrip("/"), lib)
        for name, host in sorted(files.items()):
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in added:
                    _add_dir(tar, d)
                    added.add(d)
            if name not in added:
                tar.add(os.path.realpath(host), arcname=name, recursive=False)  # a library's symlink, as the file it names
                added.add(name)
    return buf.getvalue()
