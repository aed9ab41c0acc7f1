"""Streamlit glue shared by app.py and the pages: the model picker's state and the cached shipped models.

Per-user things live in st.session_state (each browser tab has its own); only the shipped checkpoints,
which nobody can change from the app, are cached once per server with st.cache_resource.
"""

from __future__ import annotations

import gc
import importlib
import logging
import re
import threading
import uuid
from pathlib import Path, PurePosixPath

import streamlit as st

from envnet import checkpoint, cpu, limits, plots
from envnet.audio import MAX_SECONDS
from envnet.checkpoint import Checkpoint, CheckpointError, from_bytes
from envnet.jobs import find_run

SESSION_MODELS = "session_models"  # {key: Checkpoint} trained or uploaded in this session
MODEL_KEY = "model_key"  # the picker widget's key
# The selection itself ("file:NAME" or "session:ID") lives under a plain key: Streamlit drops a widget's
# state when a run does not draw that same widget (another page, a page run on its own), and code may
# change it at any time (a model just trained), which a drawn widget's own key does not allow.
CHOICE = "model_choice"
JOB = "train_job"  # this session's TrainingJob (envnet.jobs), if it started one
ADDED = "train_added"  # ids of jobs whose model is already in this session's models
SIDEBAR_DRAWN = "sidebar_drawn"  # set once app.py (or page_setup) has drawn the sidebar in this session
RUN_PARAM = "run"  # the address's query parameter holding this session's training run's token
TRAIN_PAGE = "train"  # the Train page's url path (pages/train.py), where a run's progress is drawn in full


@st.cache_resource(show_spinner="Loading model…", max_entries=6)  # each up to 200 MB
def load_shipped(name: str, mtime_ns: int) -> Checkpoint:
    """A checkpoint from checkpoints/ by NAME; the file's mtime is part of the key so a replaced file is
    reloaded. Only names from list_checkpoints reach here, never a user's text."""
    return checkpoint.load(checkpoint.CHECKPOINT_DIR / name)


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")


def plain(text: object) -> str:
    """Text from a model card or a visitor, escaped so that st.markdown shows it as typed: no link, image,
    formatting or emoji code can come from a name (names are also restricted: checkpoint.name_problem)."""
    return _MARKDOWN.sub(r"\\\1", str(text)).replace("\n", " ")


def release_upload(f) -> None:
    """Drop an uploaded file's bytes from the server once used: Streamlit otherwise keeps every upload of a
    session in memory until the session ends, refused ones included."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        ctx.uploaded_file_mgr.remove_file(ctx.session_id, f.file_id)
    except Exception:  # no runtime (a bare script) or a Streamlit without this manager: nothing held to free
        pass


def shipped() -> dict[str, tuple[Path, dict]]:
    return {f"file:{name}": (stem, card) for name, stem, card in checkpoint.list_checkpoints()}


def session_models() -> dict[str, Checkpoint]:
    return st.session_state.setdefault(SESSION_MODELS, {})


def add_session_model(key: str, ckpt: Checkpoint, select: bool = True) -> str:
    """Keep a trained or uploaded model in this session: at most limits.MAX_SESSION_MODELS, the oldest
    dropped first (each may hold 200 MB), with a note in the sidebar saying which."""
    models = session_models()
    models[key] = ckpt
    while len(models) > limits.MAX_SESSION_MODELS:
        old = next(iter(models))
        dropped = models.pop(old)
        if st.session_state.get(CHOICE) == old:
            st.session_state[CHOICE] = key
        st.session_state["sidebar_flash_warning"] = (
            f"“{dropped.name}” was removed from this session: it keeps at most {limits.MAX_SESSION_MODELS} "
            "models, oldest out first.")
    if select:
        st.session_state[CHOICE] = key
    return key


def held_out_folds(card: dict) -> list[int]:
    return list((card.get("data") or {}).get("val_folds") or [])


def model_blurb(card: dict) -> str:
    """One line under the picker: what the selected model was trained on and what it has never heard."""
    data = card.get("data") or {}
    trained, held = data.get("train_folds"), held_out_folds(card)
    if not trained:
        return ""
    folds = f"folds {trained[0]}–{trained[-1]}" if len(trained) > 1 else f"fold {trained[0]}"
    if not held:
        return f"Trained on ESC-10 {folds}."
    metrics = card.get("metrics") or {}
    acc = metrics.get("val_acc", metrics.get(f"fold{held[0]}_accuracy"))
    score = f" ({acc:.0%} right there)" if isinstance(acc, float) else ""
    shown = ", ".join(str(f) for f in held)
    return (f"A validation twin: trained on ESC-10 {folds} only, so fold {shown}'s clips are new to it{score}. "
            "Use it to test on sounds it has never heard.")


def model_options() -> dict[str, str]:
    """key → label, shipped first (the default at the top), then this session's models."""
    def shipped_label(stem, card) -> str:
        if card.get("shared_by"):
            return f"{stem.name} (shared by a visitor)"
        held = held_out_folds(card)
        return f"{stem.name} (shipped · fold {', '.join(map(str, held))} held out)" if held else f"{stem.name} (shipped)"

    opts = {k: shipped_label(stem, card) for k, (stem, card) in shipped().items()}
    for k, ck in session_models().items():
        label = f"{ck.name} ({'trained here' if k.startswith('session:trained') else 'uploaded'})"
        n = sum(1 for v in opts.values() if v == label or v.startswith(label + " #"))
        opts[k] = label if n == 0 else f"{label} #{n + 1}"  # two runs named alike stay distinguishable
    return opts


def reattach_training() -> None:
    """Keep this session's run findable from its address, and find it again after a reload or in a tab
    reopened at that address (a new session), so a model being trained is never lost with its tab."""
    job = st.session_state.get(JOB)
    token = st.query_params.get(RUN_PARAM)
    if job is None and token:
        job = find_run(token)
        if job is None:
            del st.query_params[RUN_PARAM]
            st.session_state["sidebar_flash_warning"] = ("The training run in this page's address is no longer "
                                                         "on this server (it keeps only the last few).")
            return
        st.session_state[JOB] = job
    if job is not None and token != job.token:
        st.query_params[RUN_PARAM] = job.token
    if job is not None:
        job.heartbeat()  # a page run is someone watching too (the fragments' polls stall while a long run draws)


def adopt_finished_training() -> bool:
    """Add this session's finished (or stopped) training's model to its models, once, and select it.
    Runs on every page, so a run that ends while its trainer looks at another page is not lost."""
    job = st.session_state.get(JOB)
    if job is None or job.running or job.result is None:
        return False
    added = st.session_state.setdefault(ADDED, set())
    if job.id in added:
        return False
    added.add(job.id)
    add_session_model(f"session:trained-{job.id}", job.result)
    return True


def training_heartbeat(page: str = "") -> None:
    """While this session's training runs, a small sidebar fragment polls it on every other page: the job
    knows someone is still there (an abandoned run stops itself), and the sidebar shows its progress. The
    Train page draws the run itself (and polls it): there the sidebar names no epoch, since its own poll,
    on its own clock, would name another epoch than the page's status line for a moment."""
    job = st.session_state.get(JOB)
    if job is None or not job.running:
        return
    if page == TRAIN_PAGE:
        st.caption(f"Training “{job.name}”: its progress is on this page.")
        return

    @st.fragment(run_every=3.0)
    def beat() -> None:
        job.heartbeat()
        if not job.running:
            st.rerun()  # the whole app: the finished model joins the picker
        s = job.snapshot()
        st.caption(f"Training “{job.name}”: epoch {max(s.epoch, 1)} of {s.epochs}")
        st.progress(s.fraction)

    beat()


def load_by_key(key: str) -> Checkpoint:
    if key.startswith("session:"):
        if key not in session_models():
            raise CheckpointError("that model is no longer in this session")
        return session_models()[key]
    files = shipped()
    if key not in files:
        raise CheckpointError(f"{key.removeprefix('file:')} is not in checkpoints/")
    stem, _ = files[key]
    weights = stem.with_suffix(".safetensors")
    return load_shipped(stem.name, weights.stat().st_mtime_ns)


def current_checkpoint() -> Checkpoint | None:
    """The model picked in the sidebar; the first shipped one when nothing (valid) is picked.
    Shows an error and returns None when no model can be loaded at all."""
    opts = model_options()
    key = st.session_state.get(CHOICE)
    if key not in opts:
        key = next(iter(opts), None)
    if key is None:
        st.error("No model available: checkpoints/ holds no readable checkpoint. Train one on the Train page "
                 "or upload one in the sidebar.")
        return None
    try:
        return load_by_key(key)
    except (CheckpointError, OSError) as e:
        st.error(f"Could not load the model: {e}")
        return None


def model_key_of(ckpt: Checkpoint) -> str:
    """A stable identity for caching per-model results in this session."""
    return f"{ckpt.name}:{id(ckpt.model)}"


# ---- the sidebar, on every page ---------------------------------------------------------------


def model_card(ck) -> None:
    card = ck.card
    st.markdown(f"**{plain(ck.name)}** — {len(ck.classes)} classes")
    if card.get("shared_by"):
        st.caption(f"Shared on this server by {plain(card['shared_by'])}: not checked by anyone.")
    st.markdown(", ".join(plain(c) for c in ck.classes))
    if card.get("note"):
        st.caption(plain(card["note"]))
    metrics = card.get("metrics") or {}
    if "val_acc" in metrics:
        st.metric("Validation accuracy", f"{metrics['val_acc']:.1%}")
    elif "train_acc" in metrics:
        st.metric("Training accuracy", f"{metrics['train_acc']:.1%}")
    elif isinstance((metrics.get("validation") or {}).get("accuracy"), float):
        protocol = metrics["validation"].get("protocol")
        st.metric("Held-out accuracy", f"{metrics['validation']['accuracy']:.1%}",
                  help="Measured through the app's own path on clips never trained on: "
                       + (plain(protocol) if isinstance(protocol, str) else "see the card") + ".")
    recipe = card.get("recipe") or {}
    words = {"epochs_completed": "{} epochs", "lr": "learning rate {}", "batch_size": "batch {}",
             "fc_width": "classifier width {}"}
    said = [w.format(recipe[k]) for k, w in words.items() if isinstance(recipe.get(k), int | float)]
    if recipe.get("bc") is True:
        said.append("between-class mixing")
    if recipe.get("kind") == "few-shot":
        said.insert(0, "few-shot head on the shipped model")
    if said:
        st.caption("Recipe: " + ", ".join(said) + ".")
    rule = ck.model.calibration
    st.caption(f"“Not sure” when no class reaches {rule.cutoff}." if rule else "No “not sure” rule.")
    data = card.get("data") or {}
    if data:
        st.caption(f"Data: {plain(no_paths(data.get('source', data.get('dataset', '?'))))} — "
                   f"{data.get('n_train', '?')} training clips"
                   + (f", {data['n_val']} validation clips" if isinstance(data.get("n_val"), int) else ""))
    with st.popover("Whole card (JSON)"):
        st.json(no_paths({k: v for k, v in card.items() if k != "history"}))


UPLOAD_ROUND = "upload_round"  # bumped after each "Add this model": new uploader keys, emptied uploaders


def upload_model() -> None:
    n = st.session_state.get(UPLOAD_ROUND, 0)
    suffix = f"_{n}" if n else ""
    weights = st.file_uploader("Weights (.safetensors)", type=["safetensors"], key=f"upload_weights{suffix}",
                               help=f"At most {checkpoint.MAX_BYTES >> 20} MB, float weights.")
    card = st.file_uploader("Model card (.json)", type=["json"], key=f"upload_card{suffix}",  # said "128MB per file"
                            max_upload_size=-(-checkpoint.MAX_CARD_BYTES // 2**20),
                            help=f"At most {checkpoint.MAX_CARD_BYTES // 1_000_000} MB.")
    if st.button("Add this model", key="add_uploaded_model", disabled=not (weights and card)):
        # Whatever happens, the two files leave the server's memory and the uploaders are emptied.
        st.session_state[UPLOAD_ROUND] = n + 1
        try:
            ck = from_bytes(weights.getvalue(), card.getvalue())
        except CheckpointError as e:
            st.session_state["sidebar_flash_error"] = f"This model cannot be used: {e}"
        else:
            add_session_model(f"session:uploaded-{uuid.uuid4().hex[:8]}", ck)
            st.session_state["sidebar_flash"] = (f"Added {ck.name} ({len(ck.classes)} classes); it is now "
                                                 "selected.")
        finally:
            release_upload(weights)
            release_upload(card)
        st.rerun()
    if msg := st.session_state.pop("sidebar_flash_error", None):
        st.error(msg)


def _picked() -> None:
    st.session_state[CHOICE] = st.session_state[MODEL_KEY]


def warm_default_model() -> threading.Thread | None:
    """Once per server, in a background thread: fill the default model's caches (fused copy, kernels,
    frequency response; envnet.cpu.warm_up) and load plotly's figure code (plots.warm_up), so the first
    classification does not pay for them. serve.py waits for it before the server answers; under a bare
    `streamlit run app.py` it runs while the first visitor's page draws."""
    key = next(iter(shipped()), None)
    if key is None:
        return None
    try:
        model = load_by_key(key).model
    except CheckpointError:
        return None
    return _start_warm_up(model)


@st.cache_resource(show_spinner=False)
def _start_warm_up(_model) -> threading.Thread:  # the leading underscore: not hashed, so once per server
    # pandas here, before the thread: plotly looks it up in sys.modules without importing it, so a figure built
    # while the thread was still importing it read a half-imported module and failed ("partially initialized
    # module 'pandas' has no attribute 'Series'", seen under `streamlit run app.py` and AppTest, where the first
    # page runs beside the warm-up; serve.py waits for the warm-up anyway).
    importlib.import_module("pandas")

    def work() -> None:
        # the Live page's aiortc and PyAV last: all of it frozen below. Not streamlit_webrtc itself: importing it
        # declares its component, which Streamlit registers only from a script run (this thread is none), and a
        # component imported unregistered never draws (the Live page's Start button would not appear).
        steps = [lambda: cpu.warm_up(_model), plots.warm_up,
                 lambda: importlib.import_module("aiortc"), lambda: importlib.import_module("av")]
        for step in steps:  # each on its own: one failing (a module half imported by a page) spares the others
            try:
                step()
            except Exception:  # a warm-up that fails costs only speed: the pages compute on demand
                logging.getLogger(__name__).exception("warm-up failed")
        freeze_heap()

    thread = threading.Thread(target=work, name="envnet-warm-up", daemon=True)
    thread.start()
    return thread


def freeze_heap() -> None:
    """Exclude every object alive now from Python's cyclic garbage collector (gc.freeze).

    Streamlit collects all garbage after every script run (runner.postScriptGC), a fragment's included: with
    torch, plotly, pandas and aiortc loaded that walked some 300,000 objects, 0.2-1.7 s each time on a busy
    2-core machine, five times a second on the Live page, holding the GIL (benchmarks/README.md). Frozen, the
    modules and models loaded so far are skipped: the collection walks only what was made since. Objects
    freed by their reference count are freed as before; only cycles among the frozen ones stay."""
    gc.collect()
    gc.freeze()


@st.cache_resource(show_spinner=False)
def freeze_loaded(after: str) -> bool:
    """freeze_heap once per server after `after` (a package a page just imported) was loaded."""
    freeze_heap()
    return True


def render_sidebar(page: str = "") -> None:
    """The model picker, the model card and the model upload; `page`, the url path of the page shown."""
    st.session_state[SIDEBAR_DRAWN] = True
    reattach_training()
    adopt_finished_training()
    with st.sidebar:
        st.title("EnvNet Sound Lab")
        options = model_options()
        if options:
            if st.session_state.get(CHOICE) not in options:
                st.session_state[CHOICE] = next(iter(options))
            st.session_state[MODEL_KEY] = st.session_state[CHOICE]
            st.selectbox("Model", list(options), format_func=options.get, key=MODEL_KEY, on_change=_picked,
                         help="Shipped checkpoints, then models trained or uploaded in this browser session "
                              "(only you can see those).")
        # One block for the notes that come and go, present on every run: the expanders below then keep their
        # place, and so stay open and keep the file just chosen (when "Added …" vanished on the next run, they
        # moved up, were drawn anew closed, and a model card chosen after the weights was lost).
        with st.container():
            choice = st.session_state.get(CHOICE)
            if options and choice in shipped() and (blurb := model_blurb(shipped()[choice][1])):
                st.caption(blurb)
            if "sidebar_flash" in st.session_state:
                st.success(st.session_state.pop("sidebar_flash"))
            if "sidebar_flash_warning" in st.session_state:
                st.warning(st.session_state.pop("sidebar_flash_warning"))
        ckpt = current_checkpoint()
        if ckpt is not None:
            with st.expander("Model card"):
                model_card(ckpt)
        with st.expander("Use your own model file"):
            upload_model()
        training_heartbeat(page)


def page_setup(page: str = "") -> None:
    """Called at the top of every page. Normally app.py has drawn the sidebar and runs the page through
    st.navigation. But when a fresh server's first request is a deep link (a bookmarked /train?run=…),
    Streamlit runs that file on its own, in its old multipage mode, with a navigation made from the files
    in pages/ (`_ui` included), until some run of app.py calls st.navigation. Leave that mode for the whole
    server and rerun, so the same page and address come through app.py. (AppTest re-enters that mode on
    every run it makes; there a rerun would drop the widget event being tested, so draw the sidebar.)"""
    try:
        from streamlit.runtime.pages_manager import PagesManager

        standalone = bool(PagesManager.uses_pages_directory)
    except (ImportError, AttributeError):  # a future Streamlit without this flag: app.py is always the entry
        return
    if standalone:
        PagesManager.uses_pages_directory = False
        if SIDEBAR_DRAWN not in st.session_state:  # the session's first run: nothing to lose by rerunning
            st.rerun()
        render_sidebar(page)


# ---- words ------------------------------------------------------------------------------------

# A sound file is cut off at audio.MAX_SECONDS (60 s) of sound; 50 MB holds a minute of even 96 kHz 24-bit
# stereo WAV, so the uploader's own "… per file" line is near the real limit instead of the server's 128 MB.
SOUND_UPLOAD_MB = 50
SOUND_UPLOAD_HELP = (f"WAV, FLAC, OGG or MP3, up to {MAX_SECONDS:.0f} seconds of sound each. Stereo is mixed to mono, "
                     "any sample rate is converted to 16 kHz.")

_PATH = re.compile(r"(?<![\w.:/])(?:~|\.{1,2})?(?:/[\w.@+-]+)+/?")


def no_paths(value):
    """On a public server (ENVNET_PUBLIC), server paths in text, or in a model card's values, are cut to their
    last part: "esc10 at ../shared/data/esc10" → "esc10 at esc10". Elsewhere everything is shown as it is."""
    if not limits.public():
        return value
    if isinstance(value, str):
        return _PATH.sub(lambda m: PurePosixPath(m.group(0).rstrip("/")).name or "…", value)
    if isinstance(value, dict):
        return {k: no_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [no_paths(v) for v in value]
    return value


# ---- figures ----------------------------------------------------------------------------------


def chart(fig, key: str, container=None, **kwargs):
    """A plotly figure the way every page shows one: full width, its own colours, a short toolbar."""
    return (container or st).plotly_chart(fig, width="stretch", theme=None, key=key, config=plots.CHART_CONFIG,
                                          **kwargs)


def charts_side_by_side(figs, keys: list[str]) -> None:
    """Related figures in columns: side by side on a laptop, one above the other on a phone."""
    for col, fig, key in zip(st.columns(len(figs)), figs, keys, strict=True):
        chart(fig, key, col)


SPECTROGRAM_CAPTIONS = (
    "**Activation** (the learned map): how strongly each learned filter answers, its output after the two filter layers "
    f"and the 10 ms max-pool, drawn in dB below the loudest cell (20·log₁₀ of the ratio, floor "
    f"{plots.LEARNED_FLOOR_DB:.0f} dB) so quiet detail stays visible.",
    f"**dB** (the mel map): decibels, 10·log₁₀ of the sound's power in each mel band, the loudest "
    f"{plots.MEL_RANGE_DB:.0f} dB shown; every 10 dB is ten times the power.",
    "**Why they look alike**: both split the sound into 40 frequency bands, low at the bottom, every 10 ms. The "
    "mel bands were designed by people; the network learned its filters from sounds, and with rows sorted by "
    "centre frequency they end up covering the frequencies in a similar way.",
)


def show_spectrograms(learned, mel, *, start_sample: int = 0, response=None, key: str) -> None:
    """The learned and mel spectrograms of one window side by side (stacked on a phone), their y axes in Hz
    when the filters are sorted by their measured centre frequencies (`response`), and what the colours mean.
    Drawn as images, which the browser replaces at once when the window moves; interactive charts (zoom,
    hover with each cell's value) on request, at ~0.4 s of the browser's time per chart and move."""
    order, centres = (None, None) if response is None else (response.order, response.centres)
    if st.toggle("Zoom and hover on the maps", key=f"{key}_interactive",
                 help="Interactive charts: zoom in, and hover for a cell's time, filter, frequency and raw "
                      "value. Slower to redraw when the window changes."):
        figs = plots.spectrogram_pair(learned, mel, start_sample=start_sample, order=order, centres=centres)
        charts_side_by_side(figs, [f"{key}_learned", f"{key}_mel"])
    else:
        st.html(plots.maps_html(learned, mel, start_sample=start_sample, order=order, centres=centres))
    for line in SPECTROGRAM_CAPTIONS:
        st.caption(line)
