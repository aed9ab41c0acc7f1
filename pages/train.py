"""Train EnvNet live on your own classes, ESC-10/ESC-50 from the cache, or a folder on the server: settings,
live curves and filter responses, stop, download or share the model. The own-classes model is
`recordings.OwnClasses`; the run is a `jobs.TrainingJob`."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import streamlit as st

from envnet import checkpoint, download, limits, plots, recordings
from envnet.checkpoint import Checkpoint, safe_name
from envnet.data import Dataset, load_waves, read_dataset, read_esc50
from envnet.examples import dataset_roots
from envnet.fewshot import train_few_shot
from envnet.jobs import HEARTBEAT_TIMEOUT, SHARE_OFF, SLOT, TrainingJob, share
from envnet.model import SAMPLE_RATE
from envnet.train import TrainConfig, suggested_batch
from pages._ui import (
    ADDED,
    JOB,
    SOUND_UPLOAD_HELP,
    SOUND_UPLOAD_MB,
    TRAIN_PAGE,
    add_session_model,
    chart,
    charts_side_by_side,
    no_paths,
    page_setup,
    release_upload,
)

OWN = "own_classes"  # this session's recordings.OwnClasses
SEEN = "own_seen_files"  # upload/recording ids already added, so a rerun never adds one twice
REFUSED = "own_refused_files"  # (class id, upload batch) → its refused files' whys; a recorder's key → (recording, why)
_DOWNLOAD_LOCK = threading.Lock()  # one dataset download per server
VISITOR = "train_visitor"  # this session's place-holder in the server's training queue
FEW_SHOT = "fewshot_result"  # this session's last few-shot training: (FewShotResult, model name)


def own_classes() -> recordings.OwnClasses:
    st.session_state.setdefault(SEEN, set())
    st.session_state.setdefault(REFUSED, {})
    return st.session_state.setdefault(OWN, recordings.OwnClasses())


def add_class() -> None:
    try:
        own_classes().add_class(st.session_state.get("own_new_class", ""))
        st.session_state["own_new_class"] = ""
    except ValueError as e:
        st.session_state["own_msg"] = str(e)


LISTEN = ": listen to them below and remove any that are not the sound."


def add_example(class_name: str, file_id: str, name: str, data: bytes, session: bool = False) -> str | None:
    """Keep one example, or the examples a recording session or long upload is split into. Returns why the file
    was not added, the first time it is seen (None when it was, or was seen before). A split's message is left in
    "own_msg_ok": the uploader shows it above the classes after its rerun, a recorder right under itself."""
    seen = st.session_state[SEEN]
    if file_id in seen:
        return None
    seen.add(file_id)
    try:
        added = own_classes().add_file(class_name, name, data, session=session)
    except ValueError as e:  # AudioError included
        return f"“{name}” was not added: {e}"
    if session or added[0].name != name:  # split into takes: say so (kept whole: nothing to say)
        said = (f"“{name}” was split into {len(added)} examples of “{class_name}”" if len(added) > 1 else
                f"One sound was found in “{name}”, kept as an example of “{class_name}”")
        earlier = st.session_state.get("own_msg_ok")  # an upload of several files: each is said, not the last
        st.session_state["own_msg_ok"] = (earlier.removesuffix(LISTEN) + "; " if earlier else "") + said + LISTEN
    return None


def record(name: str, key: str, label: str, example: str, session: bool = False) -> None:
    """A microphone recorder for class `name`. A refused recording is said why for as long as the recorder still
    holds it (said once, it then sat there unexplained); what a split made is said under it."""
    rec = st.audio_input(label, sample_rate=SAMPLE_RATE, key=key)
    if rec is None:
        return
    file_id, refused = f"{key}:{rec.file_id}", st.session_state[REFUSED]
    if file_id not in st.session_state[SEEN]:
        refused[key] = file_id, add_example(name, file_id, example, rec.getvalue(), session=session)
        if split := st.session_state.pop("own_msg_ok", None):
            st.success(split)  # here, not above the classes after a rerun: a rerun broke every recorder's playback
    held, why = refused.get(key, (None, None))
    if why and held == file_id:
        st.error(why)


def add_uploads(cls, name: str) -> None:
    """The class's uploader. Its files are added (or refused, and said why) and then it is emptied: what was kept
    is listed below it, and a file the uploader still listed would look added, or sit there unexplained."""
    batch = st.session_state.setdefault(f"own_up_round_{cls.id}", 0)
    ups = st.file_uploader(f"Add examples to “{name}”", accept_multiple_files=True, key=f"own_up_{cls.id}_{batch}",
                           max_upload_size=SOUND_UPLOAD_MB, help=SOUND_UPLOAD_HELP)
    refused = st.session_state[REFUSED]
    for why in refused.get((cls.id, batch - 1), []):  # the last batch's refusals, until the next batch
        st.error(why)
    if ups:
        for f in ups:
            if why := add_example(name, f"up:{f.file_id}", f.name, f.getvalue()):
                refused.setdefault((cls.id, batch), []).append(why)
            release_upload(f)  # decoded and kept as a wave: the file's bytes need not stay on the server
        refused.pop((cls.id, batch - 1), None)
        st.session_state[f"own_up_round_{cls.id}"] = batch + 1
        st.rerun()  # the emptied uploader, and any split's message above the classes


def add_background() -> None:
    try:
        own_classes().add_class(recordings.BACKGROUND)
    except ValueError as e:
        st.session_state["own_msg"] = str(e)


def own_classes_editor() -> None:
    own = own_classes()
    st.markdown("Name two or more classes (say *clap*, *whistle*, *knock*), then give each a few examples: "
                "upload files or record with the microphone. Five or more per class works best.")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    c1.text_input("New class name", key="own_new_class", placeholder="e.g. clap")
    c2.button("Add class", key="own_add_class", on_click=add_class, width="stretch")
    if recordings.BACKGROUND not in own.classes:
        st.button("Add a background class (record 10 s of the room)", key="own_add_background",
                  on_click=add_background,
                  help="Sounds that are none of your classes: with it, the model can answer “background” "
                       "instead of forcing one of your classes onto the room's noise.")
    if msg := st.session_state.pop("own_msg", None):
        st.warning(msg)
    if msg := st.session_state.pop("own_msg_ok", None):
        st.success(msg)
    for name, cls in list(own.classes.items()):
        # The count is drawn after the widgets below have added this run's files, so it is never stale.
        with st.expander(f"Class “{name}”", expanded=True):
            add_uploads(cls, name)
            if name == recordings.BACKGROUND:
                label = "Record 10 s of the room (talking, chairs, quiet: whatever is usual here)"
            else:
                label = f"Record a session of “{name}”: 10–20 s of the sound again and again, short pauses between"
            record(name, f"own_sess_{cls.id}", label, "the session", session=True)
            record(name, f"own_rec_{cls.id}", f"Record an example of “{name}”", f"recording {len(cls.examples) + 1}")
            n = len(cls.examples)
            st.caption(f"{name}: {n} example{'s' if n != 1 else ''}")
            for example in list(cls.examples):
                c1, c2, c3 = st.columns([2, 3, 1], vertical_alignment="center")
                c1.write(f"{example.name} ({example.seconds:.1f} s)")
                c2.audio(example.wav, format="audio/wav")
                if c3.button("Remove", key=f"own_rm_clip_{example.id}", help="Remove this example"):
                    own.remove(name, example)
                    st.rerun()
            if st.button(f"Remove “{name}”", key=f"own_rm_{cls.id}"):
                own.remove_class(name)
                st.rerun()
    save_and_restore(own)


def save_and_restore(own: recordings.OwnClasses) -> None:
    """A session's examples vanish with its tab: save them as a zip of class folders, load them back."""
    if own.held_samples:
        c1, c2 = st.columns(2)
        # The zip is built here in the page's run (and kept until the examples change), not by a deferred
        # download callable: that ran on the server's download thread while a rerun added examples.
        with st.spinner("Packing your examples into a zip…"):
            data = own.to_zip()
        c1.download_button(
            "Save these examples (.zip)", key="own_save", data=data, file_name="my-sounds.zip", mime="application/zip",
            help="One folder per class: load it here again later, or train on it with python -m envnet train.")
    else:
        c2 = st.container()
    up = c2.file_uploader("Load saved examples (.zip)", type=["zip"], key="own_load",
                          help="A zip with one folder of sound files per class, as “Save these examples” makes; "
                               f"up to {recordings.describe_seconds(recordings.MAX_TOTAL_SECONDS)} of sound in all.")
    if up is None or f"zip:{up.file_id}" in st.session_state[SEEN]:
        return
    st.session_state[SEEN].add(f"zip:{up.file_id}")
    try:
        added, n_classes, problems = own.load_zip(up.getvalue())
    except ValueError as e:
        st.error(f"“{up.name}” could not be loaded: {e}")
        return
    finally:
        release_upload(up)
    st.session_state["own_msg_ok"] = (f"Loaded {added} example{'s' * (added != 1)} in {n_classes} "
                                      f"class{'es' * (n_classes != 1)} from “{up.name}”.")
    if problems:
        st.session_state["own_msg"] = f"Some of “{up.name}” was skipped: " + "; ".join(problems[:5])
    st.rerun()


def download_button() -> None:
    if not st.button("Download ESC-50 (includes ESC-10)", key="train_download",
                     help="About 600 MB from GitHub into the server's cache."):
        return
    if not _DOWNLOAD_LOCK.acquire(blocking=False):
        st.warning("Another visitor is downloading the dataset right now; try again in a few minutes.")
        return
    try:
        with st.spinner("Downloading ESC-50… (this can take several minutes)"):
            root = download.download("esc50", progress=False)
        st.success("ESC-50 is ready: choose it under “Dataset folder” below." if limits.public()
                   else f"ESC-50 is ready at {root}.")
    except download.OfflineError:  # its own message tells a command-line user what to type: not for this page
        st.error(offline_message(download.cache_dir() / download.DATASET_DIR, download.ESC50_URL))
    except Exception as e:  # disk full, bad archive: say so, keep the page usable
        text = str(e).replace("run the same command again", "press the button again")
        st.error(f"The download did not work: {no_paths(text)}")
    finally:
        _DOWNLOAD_LOCK.release()


def offline_message(target, url: str) -> str:
    """What a visitor can do when this server cannot reach GitHub."""
    text = ("This server cannot reach GitHub to download ESC-50 right now. You can still train on your own "
            "classes: choose “Your own classes” above and record or upload a few sounds of each.")
    if not limits.public():  # whoever runs the app can put the data in place by hand
        text += (f" If you run this app yourself: download ESC-50 ({url}) on a machine with internet "
                 f"access and unpack it so that {target}/audio/ and {target}/meta/esc50.csv exist, then reload "
                 "this page; or pick “A folder on the server” and give the folder you unpacked it to.")
    return text


@st.cache_resource(show_spinner=False, max_entries=4)
def cached_dataset(root: str, subset: str | None) -> Dataset:
    """Decoded waveforms, shared by every session (the data on disk is the same for all)."""
    return load_waves(read_dataset(root, subset))


def few_shot_section() -> None:
    """The default for your own classes: the shipped model as a frozen embedding, a new last layer, seconds."""
    own = own_classes()
    ready = sum(1 for c in own.classes.values() if c.examples) >= 2
    name = st.text_input("Model name", "my-sounds", key="fs_name")
    if st.button("Train", key="fs_train", type="primary", disabled=not ready,
                 help="Fits a new last layer on the shipped model's view of your examples: seconds, on any CPU."):
        classes = {n: c for n, c in own.classes.items() if c.examples}
        examples = {n: [e.wave for e in c.examples] for n, c in classes.items()}
        keys = {n: [e.id for e in c.examples] for n, c in classes.items()}
        try:
            with st.spinner("Training on your examples…"), limits.few_shot_slot():
                result = train_few_shot(examples, keys=keys)
        except (ValueError, limits.ServerBusyError) as e:
            st.error(f"Could not train: {e}")
            return
        model_name = safe_name(name, "my-sounds")
        ck = Checkpoint(result.model, result.card(model_name, trained_in="EnvNet Sound Lab app (few-shot)"))
        add_session_model(f"session:trained-fewshot-{id(result)}", ck)
        st.session_state[FEW_SHOT] = (result, ck)
        st.rerun()  # the whole app: the sidebar shows and selects the new model
    if FEW_SHOT in st.session_state:
        few_shot_report(*st.session_state[FEW_SHOT])


def few_shot_report(result, ck: Checkpoint) -> None:
    st.success(f"“{ck.name}” is trained ({result.seconds['total']:.1f} s) and selected in the sidebar: try it "
               "on the Classify page.")
    n = len(result.classes)
    if result.accuracy is None:
        st.info("Every class has a single example, so none could be held out to check the model. Add a few more "
                "examples per class to see how well it does.")
        return
    how = "each example held out once" if result.n_held_out and min(
        sum(r) for r in result.confusion) >= 3 else "leave-one-out"
    st.markdown(f"**{result.accuracy:.0%} right** on {result.n_held_out} held-out examples ({how}; a guess "
                f"would be right {result.chance:.0%} of the time).")
    if result.near_chance:
        st.warning(f"That is close to guessing ({result.chance:.0%} with {n} classes): the model has not learned "
                   "to tell these classes apart. Record more examples, make the sounds more different, or "
                   "record them in the same place as you will use the model.")
    per = " · ".join(f"{c}: {'–' if a is None else f'{a:.0%}'}" for c, a in result.per_class.items())
    st.caption(f"Per class: {per}")
    if (rule := ck.model.calibration) and isinstance(rule.figures.get("unknown_flagged"), float):
        st.caption(f"Classify says “not sure” when no class reaches {rule.cutoff}: that kept "
                   f"{rule.figures['known_kept']:.0%} of the held-out examples confident and flags "
                   f"{rule.figures['unknown_flagged']:.0%} of generated tones, noises and clicks as none of your sounds.")
    chart(plots.confusion_figure(result.confusion, result.classes), "fs_confusion")
    weights = checkpoint.state_bytes(ck.model)
    c = st.columns(2)
    c[0].download_button("Download weights (.safetensors)", weights, f"{ck.name}.safetensors",
                         "application/octet-stream", key="fs_dl_weights")
    c[1].download_button("Download model card (.json)", json.dumps(ck.card, indent=2).encode(), f"{ck.name}.json",
                         "application/json", key="fs_dl_card")


def choose_data() -> tuple[Dataset | None, Dataset | None]:
    sources = ["Your own classes", "ESC-10 / ESC-50 (cache)", "A folder on the server"]
    if limits.public():  # a public Space must not let visitors browse the server's folders
        sources.pop()
    source = st.radio("Training data", sources, horizontal=True, key="train_source")
    if source == "Your own classes":
        own_classes_editor()
        if sum(1 for c in own_classes().classes.values() if c.examples) < 2:
            st.info("Add at least two classes with at least one example each to train.")
            return None, None
        # Only the chosen way's controls: the few-shot name and Train button give way to the whole-network
        # settings when the toggle (below them) is on. Its value from the last run decides what comes first.
        if not st.session_state.get("train_full_own", False):
            few_shot_section()
        if not st.toggle("Advanced: train the whole network instead", key="train_full_own",
                         help="Minutes to hours on a CPU, and it needs far more examples than a few per class: "
                              "for ESC-scale data."):
            return None, None
        val = st.selectbox("Validation", ["none", "hold out every 5th example"], key="train_val_own",
                           help="Held-out examples are not trained on; their accuracy shows what the model learned.")
        return own_classes().to_dataset(holdout=0 if val == "none" else 5)
    if source == "ESC-10 / ESC-50 (cache)":
        roots = dataset_roots()
        if not roots:
            st.info("No ESC-50 copy was found on this server.")
            download_button()
            return None, None
        root = st.selectbox("Dataset folder", [str(r) for r in roots], key="train_root",
                            format_func=lambda r: Path(r).name if limits.public() else r)  # no server paths
        subset = st.selectbox("Subset", ["esc10", "esc50"], format_func=str.upper, key="train_subset")
        return split_by_fold(root, subset)
    folder = st.text_input("Folder on the server", key="train_folder",
                           help="ESC-50's layout (audio/ + meta/esc50.csv) or one sub-folder of audio files per class.")
    if not folder:
        return None, None
    return split_by_fold(folder, None)


def split_by_fold(root: str, subset: str | None) -> tuple[Dataset | None, Dataset | None]:
    try:
        # Fail fast, before decoding. Assigned, not a bare expression: Streamlit's "magic" would write the
        # Dataset object (server paths and all) onto the page.
        _ = read_esc50(root, subset) if subset else read_dataset(root)
        with st.spinner("Decoding the clips (only the first time)…"):
            ds = cached_dataset(root, subset)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).removeprefix(f"{root}: ")
        st.error(no_paths(f"Could not read {root}: {reason}"))
        return None, None
    st.caption(f"{len(ds)} clips, {len(ds.classes)} classes, folds {ds.folds}.")
    options = ["none", *ds.folds]
    val = st.selectbox("Validation", options, index=len(options) - 1 if len(ds.folds) > 1 else 0,
                       key="train_val_fold", format_func=lambda f: "none" if f == "none" else f"fold {f}")
    if val == "none":
        return ds, None
    if len(ds.folds) == 1:  # it once started, and failed with "no usable training clips"
        st.error(f"Every clip is in fold {val}: validating on it would leave nothing to train on. Choose “none”.")
        return None, None
    return ds.select(exclude=[val]), ds.select(folds=[val])


def settings(n_clips: int | None = None) -> tuple[TrainConfig, str]:
    c = st.columns(4)
    max_epochs = limits.PUBLIC_MAX_EPOCHS if limits.public() else 2000
    epochs = c[0].number_input("Epochs", 1, max_epochs, 20, key="train_epochs",
                               help=f"At most {max_epochs}" + (f" and {limits.PUBLIC_MAX_TRAIN_SECONDS // 60} minutes "
                                                               "per run on this public server." if limits.public()
                                                               else "."))
    batch = c[1].number_input("Batch size", 1, 256, suggested_batch(n_clips) if n_clips else 32, key="train_batch",
                              help="Never more than the training clips: a larger number is lowered to their count.")
    lr = c[2].select_slider("Learning rate", [0.001, 0.003, 0.01, 0.03, 0.1], value=0.01, key="train_lr")
    width = c[3].selectbox("Classifier width", [64, 256, 1024, 4096], index=1, key="train_width",
                           help="Units in each fully connected layer; the paper uses 4096, small data needs less.")
    c = st.columns(3)
    bc = c[0].checkbox("BC learning", key="train_bc",
                       help="Between-class learning: train on mixtures of two sounds of different classes, "
                            "labelled by their mixing ratio.")
    augment = c[1].checkbox("Augment (stretch and gain)", key="train_augment",
                            help="Each crop is sped up or slowed down by up to 25 % and made up to 6 dB louder or "
                                 "quieter, so a few examples go further.")
    init = c[2].checkbox("Start from the default model's filters", value=True, key="train_init",
                         help="Reuse the shipped model's learned feature layers (conv1, conv2): much faster on "
                              "little data.")
    name = st.columns(3)[0].text_input("Model name", "my-model", key="train_name")
    init_path = None
    if init:
        if checkpoint.paths(checkpoint.default_checkpoint())[0].is_file():
            init_path = str(checkpoint.default_checkpoint())
        else:
            st.caption("No default checkpoint here: starting from random filters.")
    cfg = TrainConfig(epochs=int(epochs), batch_size=int(batch), lr=float(lr), fc_width=int(width), bc=bc,
                      augment=augment, init_features=init_path, eval_every=max(1, int(epochs) // 10), filters_every=1)
    return cfg, safe_name(name, "my-model")


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "…"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def progress_text(s) -> str:
    """The line over the progress bar, from one RunState snapshot (its epoch, clock and estimate)."""
    left = s.seconds_left
    if s.stopping:  # a stop takes effect between batches, then the model is checked and saved: on a busy CPU, minutes
        return (f"Stopping after {len(s.history)} epoch{'s' * (len(s.history) != 1)}: finishing the current step and "
                f"saving what the model has learned · {fmt_seconds(s.clock)} so far")
    measuring = s.history and s.history[-1]["epoch"] == s.epoch and s.snapshots and s.snapshots[-1][0] < s.epoch
    if measuring:  # the heatmap still shows the epoch before: say why
        where = f"Epoch {s.epoch} of {s.epochs} done: measuring its filters"
    elif s.batch:
        where = f"Epoch {max(s.epoch, 1)} of {s.epochs}, batch {s.batch} of {s.n_batches}"
    elif not s.history:  # the first batch comes after the filters are measured once: seconds on a busy CPU
        where = f"Epoch 1 of {s.epochs}: getting ready (measuring the filters, preparing the first batch)"
    else:
        where = f"Epoch {s.epoch} of {s.epochs}: starting"
    when = f"about {fmt_seconds(left)} left" if left is not None else "estimating the time left…"
    return f"{where} · {fmt_seconds(s.clock)} so far · {when}"


def filters_title(s) -> str:
    """The live heatmap's title: the epoch its filters were measured after (0: before training began)."""
    epoch = s.snapshots[-1][0]
    return f"The 40 filters after epoch {epoch}" if epoch else "The 40 filters before training (epoch 0)"


EPOCH_ZERO = ("Epoch 0 is where training started: the filters before the first epoch (the shipped model's when "
              "“Start from the default model's filters” is on, random otherwise). Press ▶ to watch them move, "
              "or drag the slider.")


def finished(job: TrainingJob, state) -> None:
    ck = job.result
    if ck is None:
        return
    if job.id not in st.session_state.get(ADDED, set()):
        st.rerun()  # the whole app: the sidebar adopts the new model into the picker and selects it
    st.success(f"“{ck.name}” is trained and selected in the sidebar: try it on the Classify page.")
    if state.snapshots and state.freqs is not None:
        chart(plots.filter_evolution_figure(state.snapshots, state.freqs), "train_evolution")
        st.caption(EPOCH_ZERO)
    blobs = st.session_state.setdefault("train_blobs", {})
    if job.id not in blobs:
        blobs.clear()
        blobs[job.id] = (checkpoint.state_bytes(ck.model), json.dumps(ck.card, indent=2).encode())
    weights, card = blobs[job.id]
    c = st.columns(3)
    c[0].download_button("Download weights (.safetensors)", weights, f"{ck.name}.safetensors",
                         "application/octet-stream", key="train_dl_weights")
    c[1].download_button("Download model card (.json)", card, f"{ck.name}.json", "application/json",
                         key="train_dl_card")
    public = limits.public()
    if c[2].button("Share on this server", key="train_share", disabled=public,
                   help=SHARE_OFF[0].upper() + SHARE_OFF[1:] if public else
                   "Save it to checkpoints/ so every visitor can pick it, labelled as shared by a visitor. "
                   "Existing and shipped names are never overwritten."):
        try:
            stem = share(ck)
            st.success(f"Saved as checkpoints/{stem.name}: every visitor can now pick it.")
        except (checkpoint.CheckpointError, OSError) as e:
            st.error(f"Could not share it: {e}")


def live_view() -> None:
    job: TrainingJob | None = st.session_state.get(JOB)
    if job is None:
        return
    job.heartbeat()
    s = job.snapshot()  # the one snapshot everything below is drawn from: status line, curves, heatmap title
    if s.status == "running":
        st.progress(s.fraction, text=progress_text(s))
        st.button("Stop training", key="train_stop", on_click=job.stop, type="primary", disabled=s.stopping)
        st.caption("Closing this tab does not lose your model: this page's address (bookmark it) brings the run "
                   f"back. Without a page watching, the run stops after {HEARTBEAT_TIMEOUT:.0f} s and keeps what "
                   "it has learned.")
    elif s.status == "failed":
        st.error(no_paths(f"Training failed: {s.error}"))
    else:
        st.progress(1.0 if s.status == "done" else s.fraction,
                    text=f"{'Finished' if s.status == 'done' else 'Stopped'} after {len(s.history)} epochs "
                         f"in {fmt_seconds(s.clock)}.")
        if s.message:
            st.info(s.message)
    if s.history or s.batch_losses:
        charts_side_by_side(plots.training_curves(s.history, s.batch_losses), ["train_loss", "train_accuracy"])
    # A finished run shows the same heatmap as the last frame of "How the filters evolved": draw it once.
    evolution_follows = s.status in ("done", "stopped") and job.result is not None and s.snapshots
    if s.latest is not None and not evolution_follows:
        chart(plots.frequency_response_figure(s.latest, sort=True, title=filters_title(s)), "train_filters")
    if s.status in ("done", "stopped"):
        finished(job, s)
    elif s.status == "running" and not job.running:
        st.rerun()  # the thread ended between snapshot and now: redraw the final state


def queue_view(me: str, where) -> None:
    """The server's one whole-network training is taken (or promised to the first in line): this visitor's
    place in the line, kept while the page is open; the page wakes up when it is their turn."""
    if SLOT.position(me) is None:
        waiting = SLOT.waiting
        if SLOT.owner is not None:
            text = f"The server is busy training another visitor's model (for {fmt_seconds(SLOT.busy_for())} so far)"
        else:
            text = "The server's training is free, but it is another visitor's turn to start"
        where.warning(text + (f"; {waiting} visitor{'s are' if waiting != 1 else ' is'} waiting" if waiting else "")
                      + ". Join the queue to train when it is your turn, or train your own classes few-shot now.")
        where.button("Join the queue", key="train_queue", on_click=SLOT.join, args=(me,))
        return

    @st.fragment(run_every=2.0)
    def watch() -> None:
        place = SLOT.position(me)  # asking keeps the place
        if place is None or SLOT.turn_left(me) is not None:
            st.rerun()  # the whole page: it is this visitor's turn (Start comes alive), or the place is gone
        st.info(f"You are number {place} in the queue for the server's training"
                f"{' (next)' if place == 1 else ''}. Keep this page open: your place is kept while it is.")

    with where:
        watch()
        st.button("Leave the queue", key="train_leave_queue", on_click=SLOT.leave, args=(me,))


def your_turn(me: str, where) -> None:
    """The slot is free and this visitor is first in line: a countdown, so the rest of the line is not held
    up by an open tab nobody is looking at."""

    @st.fragment(run_every=2.0)
    def countdown() -> None:
        SLOT.position(me)  # asking keeps the place
        left = SLOT.turn_left(me)
        if left is None:
            st.rerun()  # the turn passed to the next visitor: the page shows the queue again
        st.success(f"It is your turn: start your training within {left:.0f} s, or the next visitor in line "
                   "gets it.")

    with where:
        countdown()


def full_network_training(train_ds, val_ds, notice) -> None:
    """The whole-network settings and Start; `notice`, a place at the top of the page, gets the server's
    queue (busy, your place, your turn), so that a phone shows it on the first screen."""
    cfg, name = settings(len(train_ds) if train_ds is not None else None)
    job: TrainingJob | None = st.session_state.get(JOB)
    mine_running = job is not None and job.running
    me = st.session_state.setdefault(VISITOR, uuid.uuid4().hex)
    my_turn = SLOT.turn_left(me) is not None
    busy = not mine_running and not my_turn and (SLOT.owner is not None or SLOT.waiting > 0)
    if busy:
        queue_view(me, notice)
    elif my_turn:
        your_turn(me, notice)
    if train_ds is not None:
        st.caption(f"Training on {len(train_ds)} clips of {len(train_ds.classes)} classes"
                   + (f", validating on {len(val_ds)}." if val_ds is not None else ", no validation."))
    if st.button("Start training", key="train_start", type="primary",
                 disabled=train_ds is None or busy or mine_running):
        try:
            new = TrainingJob(train_ds, val_ds, cfg, name)
            started = new.start(visitor=me)
        except (checkpoint.CheckpointError, OSError, ValueError) as e:
            st.error(no_paths(f"Could not set up training: {e}"))
            return
        if started:
            st.session_state[JOB] = new
            st.rerun()
        st.warning("Someone else just started a training, or it was another visitor's turn: join the queue to "
                   "be next.")


page_setup(TRAIN_PAGE)
st.header("Train your own EnvNet")
st.caption("Your own classes train in seconds (a new last layer on the shipped model), many visitors at once. "
           "Training the whole network runs on this server's CPU, one training at a time for everyone.")
notice = st.container()  # "the server is busy" and the queue: here, on a phone's first screen, not under the settings
train_ds, val_ds = choose_data()
few_shot_only = st.session_state.get("train_source") == "Your own classes" and train_ds is None
if not few_shot_only:  # the few-shot recipe needs none of the whole-network settings
    full_network_training(train_ds, val_ds, notice)

job = st.session_state.get(JOB)
if job is not None:
    st.fragment(run_every=1.0 if job.running else None)(live_view)()
