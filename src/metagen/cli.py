"""Command line: metagen train | search | adapt | write | compose | font | stylize | sample | eval | bench |
features train | demo | serve | presets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from metagen.errors import MetagenError, one_line


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--data-dir", default=None, help="folder holding the dataset (default: $METAGEN_DATA_DIR)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metagen", description="Meta-generative models: learn a new concept "
                                     "from a few examples and generate more of it.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="meta-train a model on the background concepts")
    p.add_argument("--config", required=True, help="preset name (see `metagen presets`) or a TOML file")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=500 (repeatable)")
    p.add_argument("--steps", type=int, default=None, help="shorthand for --set train.steps=N")
    p.add_argument("--seed", type=int, default=None, help="shorthand for --set train.seed=N")
    p.add_argument("--resume", action="store_true", help="continue the run folder's checkpoint")
    _add_common(p)

    p = sub.add_parser("search", help="search the generator's architecture by meta-validation on held-out "
                       "background groups (Optuna); writes the best as a preset")
    p.add_argument("--config", required=True, help="the preset whose data, split and training the search keeps")
    p.add_argument("--budget-minutes", type=float, default=60.0, help="minutes of trials in all (default 60)")
    p.add_argument("--trial-minutes", type=float, default=4.0,
                   help="meta-training minutes of a trial that is not pruned (default 4)")
    p.add_argument("--val-groups", type=int, default=1,
                   help="background groups held out to score trials (default 1); the test groups are never read")
    p.add_argument("--shots", type=int, default=5, help="support examples of a scoring task (default 5)")
    p.add_argument("--trials", type=int, default=None, help="stop after this many trials (default: the budget)")
    p.add_argument("--out", default=None, help="search folder (default: runs/search-<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the base config (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="the search's seed (default 0)")
    p.add_argument("--resume", action="store_true", help="continue the search folder's study")
    _add_common(p)

    p = sub.add_parser("serve", help="a local web app: upload or draw a few examples, get samples back")
    p.add_argument("--runs", nargs="+", default=None, metavar="DIR",
                   help="folders whose run folders (at any depth up to 4) the app may load (default: runs)")
    p.add_argument("--run", default=None, help="the run selected first, e.g. runs/demo/spatial (default: the demo's)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("adapt", help="adapt a trained model to a few example images and generate more")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint.safetensors")
    p.add_argument("--support", nargs="*", required=True, metavar="IMG", help="example images (any size/format)")
    p.add_argument("--n", type=int, default=20, help="number of samples")
    p.add_argument("--out", default="adapted.png", help="PNG grid: the support row, then the samples")
    p.add_argument("--each", default=None, metavar="DIR", help="also write every sample as its own PNG here")
    p.add_argument("--programs", action="store_true",
                   help="stroke-program models: print the inferred program and draw its strokes over the support")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)

    p = sub.add_parser("write", help="adapt a text model to a few texts of an author or style and write more")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint of a text model")
    p.add_argument("--support", nargs="+", required=True, metavar="FILE",
                   help="text files; a file holds one text, or several separated by lines holding only %%")
    p.add_argument("--n", type=int, default=5, help="number of texts to write")
    p.add_argument("--prompt", default="", help="every text starts with this")
    p.add_argument("--temperature", type=float, default=1.0, help="below 1: safer, above 1: wilder")
    p.add_argument("--top-k", type=int, default=None, help="draw each character from the k likeliest only")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)

    p = sub.add_parser("compose", help="adapt a tune model to a few tunes and write new ones (ABC, MIDI, MusicXML)")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint of a tune model (data.source = tunes)")
    p.add_argument("--support", nargs="+", required=True, metavar="FILE",
                   help="tunes in .abc (every tune of the file), .mid/.midi or .musicxml/.xml/.mxl")
    p.add_argument("--n", type=int, default=5, help="number of tunes to write")
    p.add_argument("--out", default="composed", help="folder for sample_NNN.abc/.mid/.musicxml and pianoroll.png")
    p.add_argument("--temperature", type=float, default=1.0, help="below 1: safer, above 1: wilder")
    p.add_argument("--top-k", type=int, default=None, help="draw each token from the k likeliest only")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)

    p = sub.add_parser("font", help="draw characters in the typeface of a few glyph images (a font model)")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint of a font model (data.source = fonts)")
    p.add_argument("--support", nargs="+", required=True, metavar="IMAGE",
                   help="glyph images of one typeface, any size and format, each named after its character "
                        "(A.png, U+0416.png) unless --support-chars says which they are")
    p.add_argument("--support-chars", default=None, help="the character of each support image, in order")
    p.add_argument("--chars", default="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                   help="characters to draw (any the model's reference face has: DejaVu Sans, or for a hanzi "
                        "model Droid Sans Fallback)")
    p.add_argument("--out", default="font.png", help="sheet PNG: the support, then the drawn characters")
    p.add_argument("--each", default=None, metavar="DIR", help="also one PNG per character (U+0041.png)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="learner.KEY=VALUE",
                   help="adaptation setting (refine: learner.select=3 draws each character as the likeliest of "
                        "the 3 nearest training faces' glyphs; learner.tune_steps=30)")
    _add_common(p)

    p = sub.add_parser("stylize", help="draw a content glyph in the style of a few glyphs (a font model)")
    p.add_argument("--checkpoint", required=True, help="run folder or checkpoint of a font model (data.source = fonts)")
    p.add_argument("--content", required=True, metavar="IMAGE", help="the glyph whose shape to keep")
    p.add_argument("--content-char", default=None, help="the character it shows (default: its file name); "
                   "it places the glyph on the canvas as the reference face would")
    p.add_argument("--style", nargs="+", required=True, metavar="IMAGE",
                   help="glyphs in the target style, named after their characters unless --style-chars")
    p.add_argument("--style-chars", default=None, help="the character of each style image, in order")
    p.add_argument("--out", default="stylized.png", help="PNG: style glyphs | content | result")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="learner.KEY=VALUE",
                   help="adaptation setting (refine: learner.select=3 draws each character as the likeliest of "
                        "the 3 nearest training faces' glyphs; learner.tune_steps=30)")
    _add_common(p)

    p = sub.add_parser("sample", help="generate without a support set (new concepts from the prior)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--concepts", type=int, default=8, help="rows: one concept each")
    p.add_argument("--n", type=int, default=10, help="samples per concept")
    p.add_argument("--out", default="samples.png")
    p.add_argument("--programs", action="store_true",
                   help="stroke-program models: print each imagined character's program; rows start with its strokes")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)

    p = sub.add_parser("eval", help="k-shot NLL on held-out concepts for models and baselines, plus sample grids")
    p.add_argument("--checkpoint", nargs="+", required=True, help="one or more run folders / checkpoints")
    p.add_argument("--out", default=None, help="report folder (default: <first run folder>/eval)")
    p.add_argument("--shots", type=int, nargs="+", default=None, help="default: the config's eval.shots")
    p.add_argument("--iw-samples", type=int, default=None, help="importance samples for VAE bounds")
    p.add_argument("--max-tasks", type=int, default=None, help="evaluate on at most this many held-out concepts")
    p.add_argument("--episodes", type=int, default=None,
                   help="tasks per held-out concept, each an independent support/query draw (default: eval.episodes)")
    p.add_argument("--classify", type=int, nargs="+", default=None, metavar="N",
                   help="also score N-way few-shot classification by likelihood (e.g. --classify 5 20)")
    p.add_argument("--classify-shots", type=int, default=None, metavar="K", help="shots of those episodes (default 1)")
    p.add_argument("--classify-episodes", type=int, default=None, metavar="E",
                   help="episodes per N-way setting (default: eval.classify_episodes, 100)")
    p.add_argument("--no-copy", action="store_true", help="leave out the copy-the-support baseline")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="learner.KEY=VALUE",
                   help="change how learners adapt, e.g. --set learner.eval_inner_steps=1 (repeatable; "
                        "eval_inner_steps, finetune_steps, finetune_lr, vectorize; programs: refine_steps, "
                        "joint_steps, keep_strokes, image_jitter, fit_steps, jitter_factor, flip; refine: select, "
                        "select_by, tune_steps, tune_lr)")
    _add_common(p)

    p = sub.add_parser("bench", help="every method of a bench preset on the same held-out tasks: NLL, FID, "
                       "precision/recall, fidelity, novelty, diversity, adaptation cost, with CIs and plots")
    p.add_argument("--preset", default=None, help="bench preset name (see --list) or a TOML file")
    p.add_argument("--list", action="store_true", help="list the bench presets and exit")
    p.add_argument("--out", default=None, help="results folder (default: results/bench-<preset>)")
    p.add_argument("--runs", default="runs/bench", help="where methods are trained; finished runs are reused")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the preset's seeds")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods of the preset")
    p.add_argument("--docs", default=None, metavar="MD", help="also write the table into this markdown file, "
                   "between <!-- bench:PRESET start/end --> markers (e.g. docs/results.md)")
    _add_common(p)

    p = sub.add_parser("features", help="the domain feature network behind FID and the other sample metrics")
    fsub = p.add_subparsers(dest="features_command", required=True)
    f = fsub.add_parser("train", help="train (or read from the cache) the feature network of a config's split")
    f.add_argument("--config", required=True, help="training preset or TOML: its data and split are used")
    f.add_argument("--bench", default=None, help="take the feature settings from this bench preset")
    f.add_argument("--force", action="store_true", help="retrain even if the cache has it")
    _add_common(f)

    p = sub.add_parser("demo", help="train, adapt and evaluate on the embedded glyphs dataset (a few minutes)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a much shorter run, for smoke tests")
    _add_common(p)

    sub.add_parser("presets", help="list the config presets")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MetagenError as e:
        from metagen.train import Interrupted

        print(f"metagen: error: {one_line(str(e))}", file=sys.stderr)
        return 130 if isinstance(e, Interrupted) else 2
    except KeyboardInterrupt:
        print("metagen: interrupted", file=sys.stderr)
        return 130


def cmd_train(args: argparse.Namespace) -> int:
    from metagen.config import load_config
    from metagen.train import train

    overrides = list(args.overrides)
    for key, value in (("train.steps", args.steps), ("train.seed", args.seed), ("train.device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    config = load_config(args.config, overrides)
    out = args.out or str(Path("runs") / Path(args.config).stem)
    result = train(config, out, resume=args.resume, data_dir=args.data_dir, progress=not args.quiet)
    print(f"checkpoint: {result.checkpoint} (step {result.step})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from metagen.config import load_config
    from metagen.search import BEST_FILE, SearchSettings, search

    overrides = list(args.overrides) + ([f"train.device={args.device!r}"] if args.device else [])
    config = load_config(args.config, overrides)
    out = Path(args.out or Path("runs") / f"search-{Path(args.config).stem}")
    settings = SearchSettings(budget_minutes=args.budget_minutes, trial_minutes=args.trial_minutes,
                              val_groups=args.val_groups, shots=args.shots, seed=args.seed, n_trials=args.trials)
    summary = search(config, out, settings, resume=args.resume, data_dir=args.data_dir,
                     source=f"--config {args.config}", progress=not args.quiet)
    best = summary["best"]
    print(f"best of {summary['trials']} trials ({summary['minutes']:.1f} min): trial {best['trial']}, "
          f"{best['nll']:.2f} nats/image at {args.shots} shots; {best['params']}")
    print(f"preset: {out / BEST_FILE} (metagen train --config {out / BEST_FILE}); every trial: {out / 'trials.csv'}")
    return 0


def _load(args: argparse.Namespace):  # -> (learner, checkpoint, device)
    from metagen.checkpoint import load_learner
    from metagen.train import resolve_device

    device = resolve_device(args.device or "cpu")
    learner, ckpt = load_learner(args.checkpoint, device)
    return learner, ckpt, device


def _positive(value: int, flag: str) -> None:
    if value < 1:
        raise MetagenError(f"{flag} must be at least 1, got {value}")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from metagen.serve.app import create_app
    except ImportError as e:
        raise MetagenError(f"the web app needs {e.name}: pip install 'metagen[serve]'") from None
    roots = [Path(r) for r in args.runs or ["runs"]]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing and args.runs:
        raise MetagenError(f"no folder '{missing[0]}'; give folders holding run folders with --runs")
    if not (Path("runs") / "demo" / "spatial").is_dir() and not args.runs:
        print("metagen: no runs/demo yet: `make demo` trains one in about 5 minutes (the page says so too)",
              file=sys.stderr)
    if not 0 < args.port < 65536:
        raise MetagenError(f"--port must be in 1-65535, got {args.port}")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"metagen: warning: listening on {args.host}: anyone who can reach this address can use the app",
              file=sys.stderr)
    app = create_app(roots, default_run=args.run)
    print(f"metagen: serving {', '.join(map(str, roots))} at http://{args.host}:{args.port}/ (Ctrl+C stops)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    import torch

    from metagen.data import load_support
    from metagen.viz import adapt_grid, save_each, save_png

    _positive(args.n, "--n")
    learner, ckpt, device = _load(args)
    data = ckpt.config.data
    if data.is_text:
        raise MetagenError(f"'{ckpt.path}' is a {data.source} model; adapt it with `metagen write`"
                           + (" or `metagen compose`" if data.source == "tunes" else ""))
    _check_programs(args, learner)
    support = load_support(args.support, like=ckpt).to(device)  # [K, 1, H, W]
    g = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        adapted = learner.adapt(support)
        samples = adapted.sample(args.n, generator=g)  # [n, 1, H, W]
    if args.programs:
        from metagen.programs.viz import row, strokes_over

        print(adapted.program().to_text())
        ty = adapted.type
        sheet = row([strokes_over(s.cpu(), ty.cps, ty.presence) for s in support])
        print(f"wrote {save_png(sheet, Path(args.out).with_suffix('.strokes.png'))}: the support images with the "
              "inferred strokes in colour")
    print(f"wrote {save_png(adapt_grid(support, samples), args.out)}: "
          f"the {len(support)} support images on top, {args.n} samples below")
    if args.each:
        print(f"wrote {len(save_each(samples, args.each))} PNGs to {args.each}/")
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    import torch

    from metagen.data.text import CharVocab, encode_support, read_entries

    _positive(args.n, "--n")
    if args.temperature <= 0:
        raise MetagenError(f"--temperature must be > 0, got {args.temperature}")
    if args.top_k is not None:
        _positive(args.top_k, "--top-k")
    learner, ckpt, device = _load(args)
    data = ckpt.config.data
    if not data.is_text or data.vocab is None:
        raise MetagenError(f"'{ckpt.path}' is a model of {data.source} images; `metagen write` needs a text model "
                           "(data.source = 'fortunes'); use `metagen adapt` for images")
    texts = [t for f in args.support for t in read_entries(Path(f))]
    if len(args.prompt) > data.max_len - 2:
        raise MetagenError(f"--prompt has {len(args.prompt)} characters; at most {data.max_len - 2} fit")
    support, unknown = encode_support(texts, data.vocab, data.max_len)
    support = support.to(device)  # [K, L]
    if unknown:
        print(f"note: {len(unknown)} characters of the support are not in the model's vocabulary and are read as "
              f"unknown: {unknown[:20]}", file=sys.stderr)
    vocab = CharVocab(data.vocab)
    prompt = vocab.encode([args.prompt], data.max_len)[0, 1 : len(args.prompt) + 1].to(device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        out = learner.adapt(support).sample(args.n, generator=g, temperature=args.temperature, top_k=args.top_k,
                                            prompt=prompt if args.prompt else None)
    print("\n%\n".join(vocab.decode(out.cpu())))
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    import torch

    from metagen import compose
    from metagen.checkpoint import atomic_write_text
    from metagen.data.text import CharVocab
    from metagen.viz import save_png

    _positive(args.n, "--n")
    if args.temperature <= 0:
        raise MetagenError(f"--temperature must be > 0, got {args.temperature}")
    if args.top_k is not None:
        _positive(args.top_k, "--top-k")
    learner, ckpt, device = _load(args)
    data = ckpt.config.data
    if data.source != "tunes":
        raise MetagenError(f"'{ckpt.path}' is a model of {data.source}; `metagen compose` needs a tune model "
                           "(train one with `metagen train --config tunes`)")
    tokens = compose.support_tokens(args.support, data.max_len, data.transpose)
    vocab = CharVocab(data.vocab)
    support = vocab.encode(tokens, data.max_len).to(device)  # [K, L]
    g = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        out = learner.adapt(support).sample(args.n, generator=g, temperature=args.temperature, top_k=args.top_k)
    samples = vocab.decode(out.cpu())
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(samples):
        stem = folder / f"sample_{i:03d}"
        atomic_write_text(stem.with_suffix(".abc"), compose.to_abc(text, i + 1, f"metagen sample {i + 1}"))
        compose.write_midi(text, stem.with_suffix(".mid"))
        compose.write_musicxml(text, stem.with_suffix(".musicxml"))
    atomic_write_text(folder / "samples.abc", "\n".join(compose.to_abc(t, i + 1, f"metagen sample {i + 1}")
                                                        for i, t in enumerate(samples)))
    save_png(compose.piano_roll(samples), folder / "pianoroll.png")
    save_png(compose.piano_roll(tokens), folder / "support_pianoroll.png")
    print(f"wrote {args.n} tunes to {folder}/ (sample_NNN.abc, .mid, .musicxml; samples.abc; pianoroll.png) "
          f"from {len(tokens)} support tunes, in the key with no sharps or flats of each tune's mode")
    return 0


def _font_model(args: argparse.Namespace) -> tuple[Any, Any]:
    from metagen import typeset
    from metagen.evaluate import adapt_overrides, with_adapt_settings

    overrides = adapt_overrides(args.overrides)
    learner, ckpt, _device = _load(args)
    typeset.check_font_model(learner, ckpt.config.data.source, str(ckpt.path))
    unused = set(overrides) - {c.split("=")[0] for c in with_adapt_settings(learner, overrides)}
    if unused:
        raise MetagenError(f"learner '{learner.cfg.name}' has no setting {sorted(unused)[0]}; drop that --set")
    return learner.cpu(), ckpt


def cmd_font(args: argparse.Namespace) -> int:
    from metagen import typeset

    if not args.chars:
        raise MetagenError("--chars is empty; name at least one character to draw")
    learner, ckpt = _font_model(args)
    data = ckpt.config.data
    size, faces = data.image_size, (data.scripts, data.font_dirs)
    support = typeset.read_glyphs(args.support, typeset.chars_of_files(args.support, args.support_chars,
                                                                       "--support-chars"), size, *faces)
    drawn = typeset.draw(learner, support, typeset.reference_glyphs(args.chars, size, *faces))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    typeset.sheet([support[:, 0], drawn]).save(out)
    msg = f"wrote {out} (first the {len(support)} support glyphs as read, then {len(args.chars)} characters)"
    if args.each:
        typeset.save_each(drawn, args.chars, Path(args.each))
        msg += f" and one PNG per character in {args.each}/"
    print(msg)
    return 0


def cmd_stylize(args: argparse.Namespace) -> int:
    from metagen import typeset

    learner, ckpt = _font_model(args)
    data = ckpt.config.data
    size, faces = data.image_size, (data.scripts, data.font_dirs)
    style = typeset.read_glyphs(args.style, typeset.chars_of_files(args.style, args.style_chars, "--style-chars"),
                                size, *faces)
    content = typeset.read_glyphs([args.content], typeset.chars_of_files([args.content], args.content_char,
                                                                         "--content-char"), size, *faces)[:, 0]
    drawn = typeset.draw(learner, style, content)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    typeset.sheet([style[:, 0], content, drawn]).save(out)
    print(f"wrote {out} (rows: the {len(style)} style glyphs, the content glyph, the result)")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from metagen.viz import sample_grid, save_png

    _positive(args.n, "--n")
    _positive(args.concepts, "--concepts")
    learner, ckpt, device = _load(args)
    _check_programs(args, learner)
    g = torch.Generator(device=device).manual_seed(args.seed)
    with torch.no_grad():
        concepts = [learner.prior(generator=g) for _ in range(args.concepts)]
        rows = torch.stack([c.sample(args.n, generator=g) for c in concepts])
    if args.programs:  # each imagined character: its program as text, its strokes left of its samples
        from metagen.programs.viz import column, row, strokes_over

        print("\n\n".join(f"# character {i + 1}\n{c.program().to_text()}" for i, c in enumerate(concepts)))
        blank = torch.zeros(1, *rows.shape[-2:])
        sheet = column([row([strokes_over(blank, c.type.cps, c.type.presence), sample_grid(r[None].cpu(), scale=4)])
                        for c, r in zip(concepts, rows, strict=True)])
        print(f"wrote {save_png(sheet, args.out)}: {args.concepts} rows, each the strokes of an imagined character "
              f"then {args.n} samples")
        return 0
    if ckpt.config.data.is_text:  # text: print each imagined style's texts
        from metagen.data.text import CharVocab

        vocab = CharVocab(ckpt.config.data.vocab)
        print("\n\n".join(f"## style {i}\n" + "\n%\n".join(vocab.decode(r.cpu())) for i, r in enumerate(rows)))
        return 0
    print(f"wrote {save_png(sample_grid(rows), args.out)}: {args.concepts} rows x {args.n} samples")
    return 0


def _check_programs(args: argparse.Namespace, learner: Any) -> None:
    if args.programs and learner.cfg.name != "programs":
        raise MetagenError(f"--programs needs a stroke-program model (learner 'programs'); '{args.checkpoint}' is "
                           f"learner '{learner.cfg.name}': train one with `metagen train --config omniglot-programs`")


def cmd_eval(args: argparse.Namespace) -> int:
    from metagen.checkpoint import checkpoint_path
    from metagen.evaluate import evaluate, markdown_table

    out = args.out or str(checkpoint_path(args.checkpoint[0]).parent / "eval")
    report = evaluate(args.checkpoint, out, shots=args.shots, iw_samples=args.iw_samples, max_tasks=args.max_tasks,
                      episodes=args.episodes, classify=args.classify, classify_shots=args.classify_shots,
                      classify_episodes=args.classify_episodes, include_copy=not args.no_copy,
                      data_dir=args.data_dir, device=args.device or "cpu", progress=not args.quiet,
                      overrides=args.overrides)
    print(markdown_table(report))
    print(f"\nreport: {Path(out) / 'report.json'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from metagen.bench import bench_presets, run_bench
    from metagen.config import read_toml

    if args.list:
        print("\n".join(bench_presets()))
        return 0
    if args.preset is None:
        raise MetagenError(f"give --preset, one of: {', '.join(bench_presets())} (or a TOML file)")
    out = args.out or str(Path("results") / f"bench-{Path(args.preset).stem}")
    name, raw = read_toml(args.preset, "metagen.configs.bench", "bench preset")
    if raw.get("kind") == "fonts":  # few-shot font generation has its own tasks and metrics
        from metagen.fontbench import run_font_bench

        run_font_bench(name, raw, out, args.runs, methods=args.methods, data_dir=args.data_dir,
                       device=args.device or "cpu", progress=not args.quiet, quiet=args.quiet)
        print(f"results: {Path(out) / 'report.json'}, report.md and sample sheets in {out}/")
        return 0
    run_bench(args.preset, out, args.runs, seeds=args.seeds, methods=args.methods, data_dir=args.data_dir,
              device=args.device or "cpu", docs=args.docs, progress=not args.quiet)
    print((Path(out) / "results.md").read_text())
    print(f"results: {Path(out) / 'results.json'}, plots and sample grids in {out}/")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from metagen.bench import load_preset
    from metagen.config import load_config
    from metagen.data import load_splits
    from metagen.metrics.features import FeatureConfig, feature_data, feature_net
    from metagen.train import resolve_device

    config = load_config(args.config)
    splits = load_splits(feature_data(config.data), config.split, args.data_dir)
    config.split.test_groups = splits.test_groups
    cfg = load_preset(args.bench)[1].features if args.bench else FeatureConfig()
    trained = feature_net(config, splits.background, cfg, resolve_device(args.device or "cpu"), force=args.force,
                          progress=not args.quiet)
    i = trained.info
    val = "n/a" if i["val_accuracy"] is None else f"{100 * i['val_accuracy']:.1f}%"
    print(f"feature network {i['key']}: {i['classes']} background concepts, accuracy on held-back background "
          f"examples {val}; trained in {i['seconds']:.0f}s; cached at {trained.path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from metagen.demo import run_demo

    run_demo(Path(args.out), quick=args.quick, device=args.device or "cpu", progress=not args.quiet)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from metagen.config import presets

    print("\n".join(presets()))
    return 0


COMMANDS = {"train": cmd_train, "adapt": cmd_adapt, "write": cmd_write, "sample": cmd_sample, "eval": cmd_eval,
            "bench": cmd_bench, "font": cmd_font, "stylize": cmd_stylize,
            "features": cmd_features, "demo": cmd_demo, "presets": cmd_presets,
            "serve": cmd_serve, "compose": cmd_compose, "search": cmd_search}

if __name__ == "__main__":
    sys.exit(main())
