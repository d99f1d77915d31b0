"""adb, the few commands we need: list devices, push a file, run a shell command.

Everything that reaches the device shell is quoted with `shlex.quote`, because adb joins
its arguments into one string that the device's `sh` parses again. Every failure (no adb,
no device, several devices and no serial, an unauthorized or offline phone, a device
that disappears mid-run) becomes one `ConfigError` line that says what to do.
"""

import dataclasses
import os
import shlex
import shutil
import subprocess

from proxyless_tf.errors import ConfigError

DEVICE_DIR = "/data/local/tmp"
_GONE = ("device not found", "device offline", "no devices/emulators found", "device unauthorized",
         "closed", "protocol fault", "device '")


@dataclasses.dataclass
class Device:
    serial: str
    state: str        # device | unauthorized | offline | no permissions | ...
    info: dict        # model:..., product:..., transport_id:... from `adb devices -l`


def parse_devices(text):
    """Devices from `adb devices -l` output (the daemon start-up chatter is skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("*") or line.lower().startswith("list of devices"):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        serial, rest = parts[0], parts[1:]
        state = rest[0]
        i = 1
        if state == "no" and len(rest) > 1 and rest[1].startswith("permissions"):
            state, i = "no permissions", 2
        info = dict(p.split(":", 1) for p in rest[i:] if ":" in p)
        out.append(Device(serial, state, info))
    return out


class Adb:
    """One phone through adb.

    Args:
        serial: the device to use; may be None when exactly one device is attached.
        adb: the adb executable (default: `adb` on PATH, or $ADB).
        timeout: seconds any single adb command may take.
    """

    def __init__(self, serial=None, adb=None, timeout=600):
        self.adb = adb or os.environ.get("ADB") or shutil.which("adb")
        if not self.adb:
            raise ConfigError("<adb>", "adb", "adb is not on PATH",
                              "install Android platform-tools and put adb on PATH (or set $ADB)")
        self.timeout = timeout
        self.serial = self._choose(serial)

    # ---- plumbing ---------------------------------------------------------------------
    def _run(self, args, with_serial=True, timeout=None):
        cmd = [self.adb] + (["-s", self.serial] if with_serial and getattr(self, "serial", None) else []) + args
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise ConfigError(self._where(), "adb", f"`{' '.join(args[:2])}` timed out after "
                              f"{timeout or self.timeout}s", "check the device is awake and connected") from None
        except OSError as e:
            raise ConfigError("<adb>", "adb", f"cannot run {self.adb} ({e.strerror})", "check the adb install") from None

    def _where(self):
        return f"adb:{getattr(self, 'serial', None) or '?'}"

    def _check(self, proc, what):
        if proc.returncode == 0:
            return proc
        msg = (proc.stderr or proc.stdout or "").strip().splitlines()
        msg = msg[-1] if msg else f"exit {proc.returncode}"
        low = msg.lower()
        if any(g in low for g in _GONE):
            raise ConfigError(self._where(), "device", f"device went away during {what} ({msg})",
                              "reconnect the phone, check `adb devices`, and run again; finished entries are kept")
        raise ConfigError(self._where(), what, msg[:300], "see the message above; check the device and the binary")

    # ---- devices ----------------------------------------------------------------------
    def devices(self):
        return parse_devices(self._check(self._run(["devices", "-l"], with_serial=False), "devices").stdout)

    def _choose(self, serial):
        devs = self.devices()
        if serial:
            match = [d for d in devs if d.serial == serial]
            if not match:
                have = ", ".join(f"{d.serial} ({d.state})" for d in devs) or "none"
                raise ConfigError(f"adb:{serial}", "serial", f"no such device (attached: {have})",
                                  "pass a serial listed by `adb devices`")
            dev = match[0]
        else:
            if not devs:
                raise ConfigError("<adb>", "device", "no Android device attached",
                                  "connect a phone with USB debugging on and check `adb devices`")
            ready = [d for d in devs if d.state == "device"]
            if len(devs) > 1:
                raise ConfigError("<adb>", "serial", f"{len(devs)} devices attached "
                                  f"({', '.join(d.serial for d in devs)})", "choose one with --serial=SERIAL")
            dev = ready[0] if ready else devs[0]
        if dev.state == "unauthorized":
            raise ConfigError(f"adb:{dev.serial}", "device", "unauthorized: this computer's key is not accepted",
                              "unlock the phone and accept the 'Allow USB debugging' prompt")
        if dev.state == "offline":
            raise ConfigError(f"adb:{dev.serial}", "device", "offline", "replug the cable or run `adb reconnect`")
        if dev.state != "device":
            raise ConfigError(f"adb:{dev.serial}", "device", f"not ready (state {dev.state!r})",
                              "fix udev permissions / replug, then check `adb devices`")
        return dev.serial

    # ---- commands -----------------------------------------------------------------------
    def push(self, local, remote):
        if not os.path.isfile(local):
            raise ConfigError(local, "<file>", "does not exist", "check the path")
        self._check(self._run(["push", local, remote]), "push")

    def shell(self, argv, check=True):
        """Run argv on the device; every word is shell-quoted. Returns (exit code, combined output).

        With check, adb's own "device gone" errors (as opposed to the command's exit code)
        raise the one-line ConfigError; the command's failures are left to the caller.
        """
        line = " ".join(shlex.quote(str(a)) for a in argv)
        proc = self._run(["shell", line])
        if check and proc.returncode != 0:
            last = [l for l in (proc.stderr or "").strip().splitlines() if l.strip()]
            if last and any(g in last[-1].lower() for g in _GONE):
                self._check(proc, "shell")
        return proc.returncode, (proc.stdout or "") + (proc.stderr or "")

    def file_exists(self, remote):
        code, _ = self.shell(["ls", remote], check=False)
        return code == 0

    def getprop(self, name):
        _, out = self.shell(["getprop", name], check=False)
        return out.strip()
