"""Paired A/B comparison of the hub's CPU cost: a git revision (the base) against the working tree.

    .venv/bin/python scripts/bench/ab_hub.py --base HEAD~1 [--cand REV] [--rounds 20] [--scene dense]

Why: on the shared 2-core dev machines one play of the dense scene moves by a fifth or more from run
to run (30 plays of the same code, paired: 0.70-1.33 times their partner), so `make bench`'s median
of three plays cannot tell a change of a few per cent from the machine. Here each version lives in
its own worker process, which makes the scene once and compiles its kernels before the rounds; the
rounds then play the scene once in each worker, alternately (the order flips every round, so that
neither version always runs first), and the comparison is the median of the per-round CPU ratios
(candidate, i.e. the working tree, over base) with a bootstrap 95 % interval over the rounds. A ratio whose interval excludes
1 is a measured change; run the script with ``--base HEAD`` and no change for the machine's own
spread (an A/A comparison). ``--cand REV`` compares two revisions instead.

Each worker also reports the md5 of the shots its first play published, so that a change meant to
keep the output identical is checked on the way. Both workers import ``shotline`` from their own
tree (a revision is extracted with ``git archive``), and both use that tree's bench
scenes (a change to the bench's scenes makes the comparison meaningless: the scenes' md5 are compared
and a difference is reported).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

#: What a worker runs: make the scene, play it once (compiling the kernels; its shots' md5 reported),
#: then one play per line read from stdin, its CPU seconds written back as one JSON line.
WORKER = r"""
import hashlib, json, sys
pkg_root, tree, scene_name = sys.argv[1:4]
sys.path[:0] = [pkg_root, tree + "/scripts/bench"]
import shotline.hub
assert shotline.hub.__file__.startswith(pkg_root), shotline.hub.__file__
import numpy as np
import bench_association as b
from shotline.core import messages as m

def make(name):
    if name == "dense":
        return b.dense_scene(30.0, seed=1)
    if name == "echoes":
        return b.real_echoes(b.dense_scene(30.0, seed=1))
    if name == "clean":
        return b.clean_scene(20.0, 20.0, b.network(32, 32, 250.0, np.random.default_rng(5)))
    side = {"n100": 10, "n1024": 32, "n10000": 100}[name]
    return b.dense_scene(6.0, seed=3, nodes=b.network(side, side, 250.0, np.random.default_rng(5)), extra_rate_hz=40.0)

def md5(items):
    h = hashlib.md5()
    for x in items:
        h.update(x)
    return h.hexdigest()[:12]

scene = make(scene_name)
shots, cpu, _, _ = b.play(scene)
print(json.dumps({"detections": len(scene.dets), "first_cpu_s": cpu,
                  "scene_md5": md5(repr(d).encode() for d in scene.dets),
                  "shots": len(shots), "shots_md5": md5(m.encode(shots[k]) for k in sorted(shots))}), flush=True)
for _ in sys.stdin:
    shots, cpu, _, _ = b.play(scene)
    print(json.dumps({"cpu_s": cpu, "shots": len(shots)}), flush=True)
"""

SCENES = ("dense", "echoes", "clean", "n100", "n1024", "n10000")


def paired_summary(base_s: np.ndarray, cand_s: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Per-round CPU seconds of the base and the candidate (paired by round) -> the median of their
    ratios (candidate / base) and its bootstrap 95 % interval (rounds resampled with replacement), and
    each side's median seconds."""
    base_s, cand_s = np.asarray(base_s, float), np.asarray(cand_s, float)
    if base_s.shape != cand_s.shape or base_s.size == 0:
        raise ValueError("need the same number (>= 1) of rounds on both sides")
    ratio = cand_s / base_s
    rng = np.random.default_rng(seed)
    boot = np.median(ratio[rng.integers(0, ratio.size, (n_boot, ratio.size))], axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"rounds": float(ratio.size), "ratio_median": float(np.median(ratio)), "ratio_ci_lo": float(lo),
            "ratio_ci_hi": float(hi), "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max()),
            "base_median_s": float(np.median(base_s)), "cand_median_s": float(np.median(cand_s))}


def _package_root(tree: Path, into: Path) -> Path:
    """A folder holding ``shotline/`` whose sub-packages are ``tree``'s folders (symbolic links, as the
    tree's pyproject.toml maps ``shotline.<name>`` to a folder), to put first on a worker's ``sys.path``."""
    package_dir = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    pkg = into / "shotline"
    pkg.mkdir(parents=True)
    for name, folder in package_dir.items():
        if name.count(".") == 1:  # shotline.hub -> hub (its sub-packages come with its folder)
            (pkg / name.split(".")[1]).symlink_to(tree / folder, target_is_directory=True)
    return into


def _short(rev: str) -> str:
    """The commit (short) that ``rev`` names."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", rev], check=True, capture_output=True,
                          text=True).stdout.strip()


def _extract(rev: str, into: Path) -> str:
    """``git archive`` of ``rev`` into ``into``; returns the revision's commit (short)."""
    sha = _short(rev)
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return sha


class _Worker:
    """One version's worker process (:data:`WORKER`)."""

    def __init__(self, name: str, tree: Path, pkg_root: Path, scene: str) -> None:
        self.name = name
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(pkg_root), str(tree), scene],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.first = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker ended (exit code {self.proc.wait()})")
        return json.loads(line)

    def play(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("play\n")
        self.proc.stdin.flush()
        return float(self._read()["cpu_s"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare(base_rev: str, rounds: int, scene: str, cand_rev: str | None = None,
            out=print) -> dict[str, float | str | bool]:
    """Run the comparison (see the module docstring): ``base_rev`` against ``cand_rev`` (None: the
    working tree); returns the figures it prints."""
    with tempfile.TemporaryDirectory(prefix="shotline-ab-") as tmp:
        tmp_p = Path(tmp)
        sha = _extract(base_rev, tmp_p / "base")
        if cand_rev is None:
            cand_tree, cand_name = REPO, f"the working tree {REPO}"
        elif _short(cand_rev) == sha:
            cand_tree, cand_name = tmp_p / "base", f"{cand_rev} ({sha}, the same tree)"
        else:
            cand_tree = tmp_p / "cand"
            cand_name = f"{cand_rev} ({_extract(cand_rev, cand_tree)})"
        out(f"base {base_rev} ({sha}) against {cand_name}; scene {scene}; {rounds} rounds")
        # One worker at a time while they start: each compiles its kernels (an extracted tree's cache is empty).
        base = _Worker("base", tmp_p / "base", _package_root(tmp_p / "base", tmp_p / "pkg-base"), scene)
        cand = _Worker("candidate", cand_tree, _package_root(cand_tree, tmp_p / "pkg-cand"), scene)
        try:
            if base.first["scene_md5"] != cand.first["scene_md5"]:
                out("WARNING: the two trees make different scenes (the bench's scenes changed): not comparable")
            b_s, c_s = [], []
            for r in range(rounds):
                order = (base, cand) if r % 2 == 0 else (cand, base)
                got = {w.name: w.play() for w in order}
                b_s.append(got["base"])
                c_s.append(got["candidate"])
        finally:
            base.close()
            cand.close()
    res: dict[str, float | str | bool] = dict(paired_summary(np.array(b_s), np.array(c_s)))
    n_det = int(base.first["detections"])
    res.update({"base": sha, "scene": scene, "detections": float(n_det),
                "same_shots": base.first["shots_md5"] == cand.first["shots_md5"],
                "base_shots": float(base.first["shots"]), "cand_shots": float(cand.first["shots"])})
    out(f"detections per CPU s (medians): base {n_det / res['base_median_s']:,.0f}, "  # type: ignore[operator]
        f"candidate {n_det / res['cand_median_s']:,.0f}")  # type: ignore[operator]
    out(f"CPU ratio candidate / base: median {res['ratio_median']:.3f}, 95 % interval "
        f"{res['ratio_ci_lo']:.3f}-{res['ratio_ci_hi']:.3f} (rounds {res['ratio_min']:.2f}-{res['ratio_max']:.2f})")
    out("published shots: " + ("identical" if res["same_shots"] else
                               f"DIFFERENT ({res['base_shots']:.0f} base, {res['cand_shots']:.0f} candidate)"))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="HEAD", help="git revision to compare the working tree with (default HEAD)")
    ap.add_argument("--cand", default=None, help="git revision to compare instead of the working tree")
    ap.add_argument("--rounds", type=int, default=20, help="plays of each version (default 20)")
    ap.add_argument("--scene", choices=SCENES, default="dense", help="bench scene (default dense)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    res = compare(args.base, args.rounds, args.scene, args.cand)
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
