"""A fake `adb` for tests: devices, push and shell, with a fake phone that really runs models.

State lives in $FAKE_ADB_STATE (a directory):
  config.json   {"devices": [{"serial": "...", "state": "device"|"unauthorized"|"offline"}],
                 "format": "new"|"old"|"plain", "die_on_run": false}
  fs/<serial>/  each phone's files (pushed files land at fs/<serial>/<remote path>)
  runs.jsonl    one line per benchmark_model run: which phone, what it measured (in us)
A device entry may carry "model" (ro.product.model, default "Fake Pixel").
  shell.log     every shell command line as received (to check the quoting)

`benchmark_model` (any pushed file whose name contains it) is emulated by running the
pushed .tflite with LiteRT here and printing benchmark_model's text, so the caller's
push -> run -> parse path is exercised for real.
"""

import json
import os
import shlex
import shutil
import sys
import time


def state_dir():
    return os.environ["FAKE_ADB_STATE"]


def config():
    with open(os.path.join(state_dir(), "config.json")) as f:
        return json.load(f)


SERIAL = None  # the phone this call talks to (set in main)


def fs(remote):
    return os.path.join(state_dir(), "fs", SERIAL, remote.lstrip("/"))


def fail(msg, code=1):
    print(msg, file=sys.stderr)
    sys.exit(code)


def pct(sorted_vals, q):
    # benchmark_model's percentile: the sample at index floor(q/100 * (n - 1)) of the sorted runs
    return sorted_vals[int(q / 100.0 * (len(sorted_vals) - 1))]


def stats_line(us, fmt):
    n = len(us)
    avg = sum(us) / n
    std = (sum((u - avg) ** 2 for u in us) / n) ** 0.5
    s = sorted(us)
    line = (f"count={n} first={us[0]} curr={us[-1]} min={s[0]} max={s[-1]} avg={avg:g} std={int(round(std))}")
    if fmt == "new":
        line += f" p5={pct(s, 5)} median={pct(s, 50)} p95={pct(s, 95)}"
    return line, {"count": n, "avg": avg, "std": std, "min": s[0], "max": s[-1], "p5": pct(s, 5),
                  "median": pct(s, 50), "p95": pct(s, 95)}


def benchmark_model(args, cfg, serial):
    opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
    graph = opts.get("graph")
    if not graph or not os.path.exists(fs(graph)):
        fail(f"ERROR: Could not open '{graph}'.\nERROR: Benchmarking failed.", 1)
    fmt = cfg.get("format", "new")
    threads, warm, runs = int(opts.get("num_threads", 1)), int(opts.get("warmup_runs", 1)), int(opts.get("num_runs", 50))
    p = "INFO: " if fmt == "new" else ""
    out = [f"{p}STARTING!", f"{p}Log parameter values verbosely: [0]", f"{p}Min num runs: [{runs}]",
           f"{p}Min runs duration (seconds): [{opts.get('min_secs', 1)}]", f"{p}Num threads: [{threads}]",
           f"{p}Min warmup runs: [{warm}]", f"{p}Graph: [{graph}]", f"{p}#threads used for CPU inference: [{threads}]"]
    if opts.get("use_gpu") == "true":
        out.append(f"{p}Use gpu: [1]")
    from ai_edge_litert.interpreter import Interpreter

    t0 = time.perf_counter()
    try:
        interp = Interpreter(model_path=fs(graph), num_threads=threads)
        interp.allocate_tensors()
    except Exception as e:  # what the real tool says for a corrupt file
        print("\n".join(out + [f"ERROR: Failed to load model: {str(e).splitlines()[0]}",
                               "ERROR: Benchmarking failed."]))
        sys.exit(1)
    init_us = int((time.perf_counter() - t0) * 1e6)
    out += [f"{p}Loaded model {graph}", f"{p}Created TensorFlow Lite XNNPACK delegate for CPU.",
            f"{p}The input model file size (MB): {os.path.getsize(fs(graph)) / 1e6:g}",
            f"{p}Initialized session in {init_us / 1000:g}ms."]
    if cfg.get("die_on_run"):
        print("\n".join(out + [f"{p}Running benchmark for at least {warm} iterations and at least 0 seconds "
                               "but terminate if exceeding 150 seconds."]), flush=True)
        fail(f"adb: error: device '{serial}' not found", 1)

    def timed(n):
        us = []
        for _ in range(n):
            t = time.perf_counter()
            interp.invoke()
            us.append(max(1, int(round((time.perf_counter() - t) * 1e6))))
        return us

    w = timed(max(1, warm))
    wline, wst = stats_line(w, fmt)
    r = timed(runs)
    rline, rst = stats_line(r, fmt)
    out += [f"{p}Running benchmark for at least {warm} iterations and at least 0 seconds but terminate if "
            "exceeding 150 seconds.", f"{p}{wline}", "",
            f"{p}Running benchmark for at least {runs} iterations and at least 0 seconds but terminate if "
            "exceeding 150 seconds.", f"{p}{rline}", ""]
    if fmt == "old":
        out.append(f"Average inference timings in us: Warmup: {wst['avg']:g}, Init: {init_us}, "
                   f"Inference: {rst['avg']:g}")
    else:
        out.append(f"{p}Inference timings in us: Init: {init_us}, First inference: {w[0]}, "
                   f"Warmup (avg): {wst['avg']:g}, Inference (avg): {rst['avg']:g}")
    print("\n".join(out))
    with open(os.path.join(state_dir(), "runs.jsonl"), "a") as f:
        f.write(json.dumps({"serial": serial, "graph": graph, "threads": threads, "args": args, "timed_us": rst,
                            "format": fmt}) + "\n")


def shell(line, cfg, serial):
    with open(os.path.join(state_dir(), "shell.log"), "a") as f:
        f.write(line + "\n")
    argv = shlex.split(line)  # the device's sh: a badly quoted line fails here as it would there
    if argv and argv[0] == "taskset":
        if len(argv) < 3:
            fail("usage: taskset [-p] [mask] [pid | cmd [args...]]", 1)
        int(argv[1], 16)
        argv = argv[2:]
    cmd = argv[0] if argv else ""
    if cmd == "mkdir":
        os.makedirs(fs(argv[-1]), exist_ok=True)
    elif cmd == "chmod":
        pass
    elif cmd == "ls":
        if not os.path.exists(fs(argv[-1])):
            fail(f"ls: {argv[-1]}: No such file or directory", 1)
        print(argv[-1])
    elif cmd == "getprop":
        model = next((d.get("model", "Fake Pixel") for d in cfg["devices"] if d["serial"] == serial), "Fake Pixel")
        props = {"ro.product.model": model, "ro.product.manufacturer": "proxyless_tf tests",
                 "ro.build.version.release": "14", "ro.board.platform": "fakeboard",
                 "ro.product.cpu.abi": "arm64-v8a"}
        print(props.get(argv[1], ""))
    elif "benchmark_model" in os.path.basename(cmd):
        if not os.path.exists(fs(cmd)):
            fail(f"/system/bin/sh: {cmd}: not found", 127)
        benchmark_model(argv[1:], cfg, serial)
    else:
        fail(f"/system/bin/sh: {cmd}: not found", 127)


def main(args):
    global SERIAL
    cfg = config()
    devs = {d["serial"]: d["state"] for d in cfg.get("devices", [])}
    serial = None
    if args[:1] == ["-s"]:
        serial, args = args[1], args[2:]
    if not args:
        fail("adb: usage: no command specified", 1)
    if args[0] == "devices":
        print("List of devices attached")
        for s, st in devs.items():
            print(f"{s}\t{st}" + (" product:fake model:Fake_Pixel device:fake transport_id:1" if st == "device" else ""))
        return
    if serial is None:
        if len(devs) != 1:
            fail("adb: error: more than one device/emulator" if devs else "adb: error: no devices/emulators found")
        serial = next(iter(devs))
    if serial not in devs:
        fail(f"adb: error: device '{serial}' not found")
    SERIAL = serial
    if devs[serial] == "unauthorized":
        fail("adb: error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set")
    if devs[serial] == "offline":
        fail("adb: error: device offline")
    if args[0] == "push":
        dst = fs(args[2])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(args[1], dst)
        print(f"{args[1]}: 1 file pushed, 0 skipped.")
    elif args[0] == "shell":
        shell(" ".join(args[1:]), cfg, serial)
    else:
        fail(f"adb: unknown command {args[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
