"""Walk-through of jit-hooks on one machine, narrated step by step (run via scripts/demo).

Starts the approval service (SQLite in a temp dir) and a real, sandboxed sshd
with the host hooks (jit_hooks/testing/sshd.py: own config, port and PAM service on
127.0.0.1), then plays requester alice and approver bob with the `jit` CLI and a
real `ssh` client. A local webhook receiver (jit_hooks/testing/receivers.py) shows
the notifications the service sends, signature checked. Everything it creates is
removed at the end, even on error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from jit_hooks.testing.receivers import WebhookReceiver
from jit_hooks.testing.service import Service, free_port, start_service
from jit_hooks.testing.sshd import SshdSandbox

REPO = Path(__file__).resolve().parent.parent

BIN = Path(sys.executable).parent
COLOR = sys.stdout.isatty()
HOOK_IDENTS = ("jit-authorized-keys", "jit-pam-account", "jit-pam-session")


def paint(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if COLOR else text


def step(n: int, text: str) -> None:
    print("\n" + paint("1;36", f"== {n}. {text}"), flush=True)


def say(text: str) -> None:
    print(textwrap.indent(textwrap.fill(text, 88), "   "), flush=True)


def show_cmd(argv: list[str], who: str) -> None:
    shown = " ".join(a if " " not in a else repr(a) for a in argv)
    print(paint("33", f"   {who}$ {shown}"), flush=True)


def show_output(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(paint("2", f"     | {line}"))


class Demo:
    def __init__(self, work: Path):
        self.work = work
        self.svc: Service | None = None
        self.box: SshdSandbox | None = None
        self.tokens: dict[str, str] = {}
        self.hook: WebhookReceiver | None = None
        self.shown_notes = 0

    # -- helpers ---------------------------------------------------------------

    def jit(self, who: str, *args: str, show: bool = True) -> str:
        """Run the `jit` CLI as `who` (their own token, no config file of root's)."""
        env = {
            **os.environ,
            "JIT_URL": self.svc.url,
            "JIT_TOKEN": self.tokens[who],
            "JIT_CONFIG": str(self.work / f"{who}.toml"),
        }
        argv = ["jit", *args]
        if show:
            show_cmd(argv, who)
        r = subprocess.run(
            [str(BIN / "jit"), *args], capture_output=True, text=True, env=env, timeout=60
        )
        if r.returncode != 0:
            raise SystemExit(f"demo: `jit {' '.join(args)}` failed: {r.stderr.strip()}")
        if show and "--json" not in args:
            show_output(r.stdout)
        return r.stdout

    def request_access(self, duration: str, reason: str) -> int:
        """alice asks for access to web1 as the demo login; the new request's id."""
        out = self.jit(
            "alice", "request", "web1", "--login", self.login,
            "--duration", duration, "--reason", reason, "--json",
        )  # fmt: skip
        return json.loads(out)["id"]

    def admin(self, *args: str) -> str:
        show_cmd(["jit-server", *args], "admin")
        return self.svc.admin(*args)

    def ssh(self, expect_in: bool) -> None:
        box = self.box
        show_cmd(
            [
                "ssh",
                "-i",
                "alice_key",
                "-p",
                str(box.port),
                f"{self.login}@127.0.0.1",
                "echo hello from $(hostname) as $(id -un)",
            ],
            "alice",
        )
        box.sink.clear()
        r = box.ssh(
            self.login, self.alice, "echo hello from $(hostname) as $(id -un)", log_level="INFO"
        )
        if r.returncode == 0:
            show_output(r.stdout)
            print(paint("1;32", "   -> logged in"))
        else:
            lines = r.stderr.replace("\r", "").splitlines()
            show_output("\n".join(ln for ln in lines if "Permanently added" not in ln))
            print(paint("1;31", f"   -> refused (ssh exit {r.returncode})"))
        time.sleep(0.3)  # let the last hook's syslog line arrive
        say("What the hooks logged (syslog authpriv, one key=value line per decision):")
        for _pri, ident, msg in box.sink.lines:
            if ident in HOOK_IDENTS:
                show_output(f"{ident}: {msg}")
        if (r.returncode == 0) != expect_in:
            raise SystemExit("demo: unexpected ssh outcome, see above")

    def notifications(self, event: str) -> None:
        """Print what the local webhook receiver got since last time, up to ``event``."""
        assert self.hook is not None
        got = self.hook.wait_for(
            lambda g: any(d.json["event"] == event for d in g[self.shown_notes :])
        )
        for d in got[self.shown_notes :]:
            body = d.json
            ok = "signature verified" if d.verified else "BAD SIGNATURE"
            print(
                paint(
                    "35", f"   webhook receiver <- {body['event']} ({ok}, id {body['id'][:12]}...)"
                )
            )
            show_output(
                f"{body['text']}\nfor: {', '.join(body['recipients'])}\npage: {body['url']}"
            )
        self.shown_notes = len(got)

    # -- the walk-through --------------------------------------------------------

    def run(self) -> None:
        step(1, "Start the approval service (SQLite in a temp dir) and a webhook receiver")
        # A stand-in for Slack or a SOC's endpoint: it checks each delivery's HMAC signature.
        secret = os.urandom(16).hex()
        self.hook = WebhookReceiver(secret=secret).start()
        port = free_port()
        (self.work / "server").mkdir()
        notify = self.work / "server" / "notify.toml"
        notify.write_text(
            textwrap.dedent(f"""\
            public_url = "http://127.0.0.1:{port}"
            [channels.demo-hook]
            type = "webhook"
            url = "{self.hook.url}"
            secret = "{secret}"
        """)
        )
        self.svc = start_service(self.work / "server", port)
        say(f"jit-server is listening on {self.svc.url}; database {self.svc.data_dir}/jit.db")
        say(
            f"Notifications go to a local webhook receiver at {self.hook.url} "
            f"({notify.name}: one signed JSON webhook channel; Slack and SMTP are configured "
            "the same way, docs/server.md)."
        )

        step(2, "Create people, a host and a policy (service admin, `jit-server`)")
        for name, role in (("alice", "requester"), ("bob", "approver"), ("root", "admin")):
            self.admin("user", "add", name, "--role", role)
            self.tokens[name] = self.admin("token", "create", name).strip()
        host_token = self.admin("host", "add", "web1", "--label", "env=prod").strip()
        say("Each token is printed once and stored only as a SHA-256 hash.")

        step(3, "Start a sandboxed sshd with the jit hooks (this machine's sshd is untouched)")
        self.box = box = SshdSandbox()
        self.login = box.add_account("deploy")
        box.configure([self.svc.url], host_token)
        say(
            f"sshd on 127.0.0.1:{box.port}, PAM service {box.name}, hooks in {box.root}/bin, "
            f"login account '{self.login}' (a fresh local user). sshd_config has:"
        )
        show_output(
            "\n".join(
                ln
                for ln in (box.root / "sshd_config").read_text().splitlines()
                if ln.startswith(("AuthorizedKeys", "ExposeAuthInfo", "UsePAM"))
            )
        )
        policy = self.work / "policy.toml"
        policy.write_text(
            textwrap.dedent(f"""\
            [[policy]]
            name = "web-prod"
            hosts = ["web1"]
            logins = ["{self.login}"]
            requesters = {{ roles = ["requester"] }}
            approvers = {{ roles = ["approver"] }}
            approvals_required = 1
            max_duration = 3600
            reason_required = true
            options = ["no-agent-forwarding"]
        """)
        )
        self.admin("policy", "add", str(policy))
        show_output(policy.read_text())

        step(4, "alice registers her SSH public key")
        self.alice = box.person("alice")
        pub = self.work / "alice_key.pub"
        pub.write_text(self.alice.public_line + "\n")
        self.jit("alice", "keys", "add", str(pub))

        step(5, "Without a request alice cannot log in")
        self.ssh(expect_in=False)

        step(6, "alice asks for access; while it is pending she still cannot log in")
        rid = self.request_access("30m", "INC-42 disk full")
        say(f"Request {rid} is pending. The approvers hear of it at once:")
        self.notifications("request.created")
        say(
            f"Approvers open the request's page {self.svc.url}/ui/requests/{rid} "
            "or use the CLI, as bob does below."
        )
        self.ssh(expect_in=False)

        step(7, "bob (approver) reviews and approves; alice's key now works")
        self.jit("bob", "list", "--review")
        self.jit("bob", "approve", str(rid), "--comment", "ok for INC-42")
        self.notifications("request.approved")
        self.ssh(expect_in=True)
        say(
            "The key line sshd got was rebuilt by the hook with expiry-time at the "
            "approval's end and only allow-listed options; no service text reaches sshd."
        )

        step(8, "bob revokes the approval; the next login is refused")
        self.jit("bob", "revoke", str(rid), "--comment", "incident closed")
        self.ssh(expect_in=False)

        step(9, "Approvals expire on their own: a 10 second approval")
        rid2 = self.request_access("10s", "INC-43 quick check")
        self.jit("bob", "approve", str(rid2))
        self.ssh(expect_in=True)
        say("Waiting for the approval to end...")
        while (
            json.loads(self.jit("alice", "show", str(rid2), "--json", show=False))["state"]
            != "expired"
        ):
            time.sleep(1)
        self.ssh(expect_in=False)

        step(10, "If the service is down, logins are denied (fail closed)")
        self.jit("bob", "approve", str(self.request_access("30m", "INC-44")))
        self.svc.stop()
        say("jit-server stopped, although alice holds an active approval:")
        self.ssh(expect_in=False)
        self.svc.start()

        step(11, "Everything is in the hash-chained audit log")
        out = self.jit("root", "audit", "--limit", "1000", "--json", show=False)
        data = json.loads(out)
        events = data["events"] if isinstance(data, dict) else data
        show_cmd(["jit", "audit"], "root")
        for e in events[-12:]:
            detail = e.get("data", {})
            decision = detail.get("decision", "")
            actor = e.get("actor") or "-"
            print(paint("2", f"     | #{e['id']:<4} {e['kind']:<22} actor={actor} {decision}"))
        show_output(self.admin("audit", "verify"))
        print(paint("1;32", "\n== Demo complete: request -> approve -> ssh -> revoke -> denied."))

    def close(self) -> None:
        if self.box:
            self.box.close()
        if self.svc:
            self.svc.stop()
        if self.hook:
            self.hook.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="scripts/demo",
        description="Walk through jit-hooks on this machine: approval service (SQLite in a temp "
        "dir), a sandboxed sshd with the hooks on 127.0.0.1, request -> approve -> ssh -> "
        "revoke/expiry -> denied. Needs root; never touches the machine's own sshd or port 22; "
        "removes everything it created.",
    )
    parser.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: run as root (it starts a real sshd with its own PAM service)", file=sys.stderr)
        return 1
    # SIGTERM/SIGHUP end the demo like Ctrl-C does: through the cleanup below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="jit-demo-"))
    demo = Demo(work)
    try:
        demo.run()
        return 0
    finally:
        print(paint("2", "\n   cleaning up: sshd, PAM file, test accounts, service, temp files"))
        demo.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
