"""Bad grid files in the user's own folder (`--config-dir <folder>`, the grid at `<folder>/ablation/mine.yaml`),
through the real entry in-process: every malformed grid is one `error:` line naming the grid and the key and what
is allowed, exit status 2, no traceback and nothing created, under a multirun, its dry run and a single run."""

import textwrap

import pytest

from tests.tiers import slow_unless
from tests.workbench.train_helpers import assert_user_error, cli_error

HEAD = "# @package _global_\ndefaults:\n  - _base\n  - _self_\n"
ARMS = "arms:\n  a: {optim.lr: 0.01}\n  b: {optim.lr: 0.02}\n"
FILE = "ablation/mine.yaml"  # every case's grid; an error about the file names it (its full path here)


def grid(body: str, head: str = HEAD) -> str:
    """A grid file: the header, `ablation.name: mine`, then `body` (the rest of the `ablation` node)."""
    return f"{head}ablation:\n  name: mine\n{textwrap.indent(textwrap.dedent(body), '  ')}"


# (grid file text, extra overrides, strings the one error line must hold). FILE: the file's path is named.
CASES = {
    # YAML the parser cannot read: the file and the line; a key given twice: the key and both lines
    "yaml unclosed flow map": (grid("arms: {a: {optim.lr: 0.1}, b: [\n"), [],
                               [FILE, "line 8 (the end, after line 7 'arms: {a:", "not valid YAML", "allowed: YAML"]),
    "yaml bad indent": (grid(ARMS + " seeds: [0]\n"), [], [FILE, "line 10 'seeds: [0]'", "not valid YAML"]),
    "yaml tab indent": (grid(ARMS + "\tseeds: [0]\n"), [], [FILE, "not valid YAML", "'\\t'"]),
    "yaml unquoted colon": (grid(ARMS + "factor: a: b\n"), [], [FILE, "line 10 'factor: a: b'", "not valid YAML"]),
    "duplicate arm name": (grid("arms:\n  a: {optim.lr: 0.01}\n  a: {optim.lr: 0.02}\n"), [],
                           [FILE, "ablation.arms.a: given twice (lines 8 and 9)", "each key once"]),
    "duplicate level name": (grid("factors:\n  size:\n    s: {model.d_model: 32}\n    s: {model.d_model: 64}\n"),
                             [], [FILE, "ablation.factors.size.s: given twice"]),
    "duplicate grid key": (grid(ARMS + "seeds: [0]\nseeds: [1]\n"), [], [FILE, "ablation.seeds: given twice"]),
    # the shape of `arms` and `factors`
    "arms a list": (grid("arms: [a, b]\n"), [], [FILE, "ablation.arms: got ['a', 'b']", "a map arm name"]),
    "arms a string": (grid("arms: a\n"), [], [FILE, "ablation.arms: got 'a'", "a map arm name"]),
    "arms empty in YAML": (grid("arms:\n"), [], [FILE, "ablation.arms: got None", "a map arm name"]),
    "arm a list": (grid("arms:\n  a: [optim.lr, 0.1]\n"), [], [FILE, "ablation.arms.a: got ['optim.lr', 0.1]"]),
    "arm a number": (grid("arms:\n  a: 0.1\n"), [], [FILE, "ablation.arms.a: got 0.1", "a map {dotted.key: value}"]),
    "arm empty in YAML": (grid("arms:\n  a:\n  b: {}\n"), [], [FILE, "ablation.arms.a: got None", "a map"]),
    "factors a list": (grid("factors: [size]\n"), [], [FILE, "ablation.factors: got ['size']", "factor -> level"]),
    "levels as a list": (grid("factors:\n  size: [s, m]\n"), [],
                         [FILE, "ablation.factors.size: got ['s', 'm']", "not a list: name each level"]),
    "factor without levels": (grid("factors:\n  size: {}\n"), [],
                              [FILE, "ablation.factors.size: got {}", "at least one level"]),
    "factor without levels beside arms": (grid(ARMS + "factors:\n  size: {}\n  lr: {x: {}}\n"), [],
                                          [FILE, "ablation.factors.size: got {}", "at least one level"]),
    "factor empty in YAML": (grid("factors:\n  size:\n"), [], [FILE, "ablation.factors.size: got None"]),
    "level a number": (grid("factors:\n  size:\n    s: 3\n"), [], [FILE, "ablation.factors.size.s: got 3", "a map"]),
    "no arms": (grid("arms: {}\n"), [], [FILE, "ablation.arms: got {}", "at least one arm"]),
    "combination is an arm": (grid("arms:\n  s_x: {}\nfactors:\n  size: {s: {}}\n  kind: {x: {}}\n"), [],
                              [FILE, "ablation.factors: the combination 's_x' is also an arm of ablation.arms"]),
    "combinations collide": (grid("factors:\n  f: {a: {}, a_b: {}}\n  g: {b_c: {}, c: {}}\n"), [],
                             [FILE, "the combination 'a_b_c' is also another combination"]),
    # names become run dirs
    "arm name a path": (grid("arms:\n  ../up: {}\n"), [], [FILE, "ablation.arms.../up: the name '../up' is not plain",
                                                          "letters, digits, _ and -"]),
    "arm name with a space": (grid("arms:\n  my arm: {}\n"), [], [FILE, "the name 'my arm' is not plain"]),
    "arm name with a dot": (grid("arms:\n  a.b: {}\n"), [], [FILE, "the name 'a.b' is not plain"]),
    "level name a path": (grid("factors:\n  size: {s/m: {}}\n"), [], [FILE, "ablation.factors.size.s/m: the name"]),
    "grid name a path": (grid(ARMS).replace("name: mine", "name: ../.."), [],
                         [FILE, "ablation.name: the name '../..' is not plain"]),
    "grid name with a slash": (grid(ARMS).replace("name: mine", "name: a/b"), [], [FILE, "ablation.name"]),
    "grid name empty": (grid(ARMS).replace("name: mine", "name: ''"), [], [FILE, "ablation.name: the name ''"]),
    "grid name from the command line": (grid(ARMS), ["ablation.name=../x"], [FILE, "ablation.name", "'../x'"]),
    # seeds and rates
    "seeds a number": (grid(ARMS + "seeds: 3\n"), [], [FILE, "ablation.seeds: got 3", "a list of distinct integers"]),
    "seeds empty": (grid(ARMS + "seeds: []\n"), [], [FILE, "ablation.seeds: got []", "at least one"]),
    "seeds empty from the command line": (grid(ARMS), ["ablation.seeds=[]"], [FILE, "ablation.seeds: got []"]),
    "seeds twice": (grid(ARMS + "seeds: [0, 0, 1]\n"), [], [FILE, "ablation.seeds: got [0, 0, 1] (0 twice"]),
    "seed negative": (grid(ARMS + "seeds: [-1, 0]\n"), [], [FILE, "ablation.seeds: got [-1, 0]", "integers >= 0"]),
    "seeds not numbers": (grid(ARMS + "seeds: [a]\n"), [], [FILE, "ablation.seeds", "'a'"]),
    "quick seeds empty": (grid(ARMS + "quick_seeds: []\n"), [], [FILE, "ablation.quick_seeds: got []"]),
    "quick seeds twice": (grid(ARMS + "quick_seeds: [1, 1]\n"), [], [FILE, "ablation.quick_seeds", "(1 twice"]),
    "rates twice": (grid(ARMS + "lrs: [1.0e-3, 0.001, 3.0e-3]\n"), [], [FILE, "ablation.lrs", "(0.001 twice"]),
    "rates a number": (grid(ARMS + "lrs: 0.01\n"), [], [FILE, "ablation.lrs: got 0.01", "a list of distinct"]),
    "rate zero": (grid(ARMS + "lrs: [0.0, 1.0e-3]\n"), [], [FILE, "ablation.lrs: got [0.0, 0.001]", "> 0"]),
    "rate outside the bounds": (grid(ARMS + "lrs: [1.0e-3, 100.0]\n"), [],
                                [FILE, "ablation.lrs: got [0.001, 100.0]", "within ablation.lr_bounds [1e-06, 10.0]"]),
    "bounds one number": (grid(ARMS + "lr_bounds: [1.0e-3]\n"), [], [FILE, "ablation.lr_bounds: got [0.001]",
                                                                    "0 < low < high"]),
    "bounds reversed": (grid(ARMS + "lr_bounds: [1.0, 1.0e-3]\n"), [], [FILE, "ablation.lr_bounds", "low < high"]),
    "bounds not positive": (grid(ARMS + "lr_bounds: [0.0, 1.0]\n"), [], [FILE, "ablation.lr_bounds", "0 < low"]),
    "bounds a number": (grid(ARMS + "lr_bounds: 1.0\n"), [], [FILE, "ablation.lr_bounds: got 1.0", "two numbers"]),
    "max seeds below the seeds": (grid(ARMS + "seeds: [0, 1, 2]\nmax_seeds: 2\n"), [],
                                  [FILE, "ablation.max_seeds: got 2", "at least the 3 seeds"]),
    "max seeds one": (grid(ARMS + "seeds: [0]\nmax_seeds: 1\n"), [], [FILE, "ablation.max_seeds: got 1", ">= 2"]),
    "seed step zero": (grid(ARMS + "seed_step: 0\n"), [], [FILE, "ablation.seed_step: got 0", ">= 1"]),
    # the decision's keys
    "margin negative": (grid(ARMS + "margin: -0.1\n"), [], [FILE, "ablation.margin: got -0.1", ">= 0"]),
    "margin not a number": (grid(ARMS + "margin: wide\n"), [], [FILE, "ablation.margin: got 'wide'"]),
    "baseline names no arm": (grid(ARMS + "baseline: c\n"), [], [FILE, "ablation.baseline: got 'c'", "(a, b)"]),
    "control names no arm": (grid(ARMS + "control: z\n"), [], [FILE, "ablation.control: got 'z'", "(a, b)"]),
    "control is the baseline": (grid(ARMS + "baseline: a\ncontrol: a\n"), [],
                                [FILE, "ablation.control: got 'a'", "other than the baseline"]),
    "metric unknown": (grid(ARMS + "metric: val_ppl\n"), [], [FILE, "ablation.metric: got 'val_ppl'", "val_bpb"]),
    "unknown grid key": (grid(ARMS + "seed: [0]\n"), [], [FILE, "unknown config key 'ablation.seed'", "seeds"]),
    # vars and quick mode
    "var missing in an arm": (grid("arms:\n  a: {optim.lr: '${ablation.vars.lr}'}\n"), [],
                              [FILE, "ablation.arms.a.optim.lr: ${ablation.vars.lr} names no var",
                               "allowed: none (ablation.vars is empty)"]),
    "var missing at the top": (grid(ARMS + "vars: {steps: 4}\n") + "trainer:\n  max_steps: ${ablation.vars.step}\n",
                               [], [FILE, "trainer.max_steps: ${ablation.vars.step} names no var", "allowed: steps"]),
    "quick override typo": (grid(ARMS + "quick_overrides: {trainer.max_stepz: 2}\n"), ["ablation.quick=true"],
                            [FILE, "ablation.quick_overrides: unknown config key 'trainer.max_stepz'", "max_steps"]),
    "quick override unknown preset": (grid(ARMS + "quick_overrides: {model: smal}\n"), ["ablation.quick=true"],
                                      [FILE, "ablation.quick_overrides: model: got 'smal'", "tiny"]),
    "quick overrides a list": (grid(ARMS + "quick_overrides: [a]\n"), [], [FILE, "ablation.quick_overrides: got"]),
    # the whole file
    "no package line": (grid(ARMS, head="defaults:\n  - _base\n  - _self_\n"), [],
                        [FILE, "first line is `# @package _global_`"]),
    "ablation a list": (f"{HEAD}ablation: [a, b]\n", [], [FILE, "ablation: got ['a', 'b']", "a map of the grid's"]),
    "ablation empty": (f"{HEAD}ablation:\n", [], [FILE, "ablation: got None", "a map of the grid's keys"]),
    "no ablation": (HEAD, [], [FILE, "ablation.arms: got {}", "at least one arm"]),
    "override of no option": (grid(ARMS, head=HEAD.replace("_base", "override /model: nope")), [],
                              [FILE, "defaults: model: got 'nope'", "allowed: ", "tiny"]),
    # an arm's keys go through the schema when it is applied: named by the grid and the arm
    "arm key typo": (grid("arms:\n  a: {optim.lrr: 0.1}\n"), [], ["grid mine, arm a", "unknown config key 'optim.lrr'",
                                                                 "did you mean lr"]),
    "arm value of the wrong type": (grid("arms:\n  a: {trainer.max_steps: abc}\n"), [],
                                    ["grid mine, arm a", "trainer.max_steps: got 'abc'"]),
}  # fmt: skip

MODES = {
    "multirun": ["--multirun", "hydra.sweep.dir={d}/sweep"],
    "dry run": ["--multirun", "dry_run=true", "hydra.sweep.dir={d}/sweep"],
    "single run": ["hydra.run.dir={d}/run"],
}
EVERY_MODE = (
    "yaml unclosed flow map",
    "arms a list",
    "seeds twice",
    "grid name a path",
    "quick override typo",
    "arm key typo",
)
# the fast tier's: one case of each group above as a dry run, and each other mode once
FAST_CASES = {
    (case, "dry run")
    for case in ("yaml unclosed flow map", "duplicate arm name", "arms a list", "arm name a path", "seeds twice",
                 "baseline names no arm", "var missing in an arm", "quick override typo", "no package line",
                 "arm key typo")
} | {("seeds twice", "multirun"), ("arm key typo", "single run")}  # fmt: skip


def params() -> list:
    """Every case as a dry run (what a user tries first); a few under every mode."""
    pairs = [(case, "dry run") for case in CASES]
    pairs += [(case, mode) for case in EVERY_MODE for mode in MODES if mode != "dry run"]
    assert set(pairs) >= FAST_CASES, FAST_CASES - set(pairs)
    return [pytest.param(c, m, id=f"{c}-{m}", marks=slow_unless((c, m) in FAST_CASES)) for c, m in pairs]


@pytest.mark.parametrize(("case", "mode"), params())
def test_a_malformed_grid_is_one_error_line(case, mode, tmp_path, monkeypatch, capsys):
    text, extra, expected = CASES[case]
    (tmp_path / "grids" / "ablation").mkdir(parents=True)
    (tmp_path / "grids" / FILE).write_text(text)
    where = [s.replace("{d}", str(tmp_path)) for s in MODES[mode]]
    flags, dirs = [w for w in where if w.startswith("-")], [w for w in where if not w.startswith("-")]
    argv = ["--config-dir", str(tmp_path / "grids"), *flags, "+ablation=mine", *extra, *dirs,
            f"data.cache_dir={tmp_path / 'c'}", "logger=none"]  # fmt: skip
    err = cli_error(argv, tmp_path, monkeypatch, capsys)
    assert_user_error(err, [s.replace(FILE, str(tmp_path / "grids" / FILE)) for s in expected])


def test_a_grid_without_base_runs_its_arms(tmp_path, monkeypatch, capsys):
    """`_base` in the defaults is no longer needed: the sweeper reads `ablation` itself."""
    import sys

    import workbench.train

    (tmp_path / "grids" / "ablation").mkdir(parents=True)
    (tmp_path / "grids" / FILE).write_text(grid(ARMS + "seeds: [0, 1]\n", head="# @package _global_\n"))
    argv = ["--config-dir", str(tmp_path / "grids"), "--multirun", "+ablation=mine", "dry_run=true",
            f"hydra.sweep.dir={tmp_path / 'sweep'}", f"data.cache_dir={tmp_path / 'c'}", "logger=none"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["workbench.train", *argv])
    with pytest.raises(SystemExit) as e:
        workbench.train.main()
    out = capsys.readouterr().out
    assert e.value.code == 0, out
    rows = sorted(line.split()[1] for line in out.splitlines() if line.startswith("arm "))
    assert rows == ["a", "a", "b", "b"]  # 2 arms x 2 seeds
    assert not (tmp_path / "sweep").exists()
