"""Audio in: every supported format decodes to the right length, rate and scale; odd inputs are
mixed, resampled, trimmed or rejected with the right typed error; clips become 24,014-sample windows."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import encode, float_wav_with, mp3_writable, png_bytes, sine, zip_bytes

from envnet.audio import (
    MAX_SECONDS,
    AudioError,
    DecodeError,
    EmptyAudioError,
    InvalidSamplesError,
    TooLongError,
    UnsupportedFormatError,
    is_silent,
    load_audio,
    pad_to_window,
    to_wav_bytes,
    trim_silence,
    window_starts,
    windows,
)
from envnet.model import SAMPLE_RATE, WINDOW


def peak_frequency(wave: torch.Tensor, sr: int = SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(wave.numpy() * np.hanning(wave.numel())))
    return float(np.fft.rfftfreq(wave.numel(), 1 / sr)[np.argmax(spec)])


# ---- good formats -------------------------------------------------------------------------------

WAV_SUBTYPES = {
    "PCM_U8": 1 / 64,  # 8-bit: quantisation step 1/128, so the tone is only this close
    "PCM_16": 1e-4,
    "PCM_24": 1e-6,
    "PCM_32": 1e-6,
    "FLOAT": 1e-7,
    "DOUBLE": 1e-7,
}


@pytest.mark.parametrize("subtype", WAV_SUBTYPES)
def test_wav_subtypes_decode_to_the_same_samples(subtype: str) -> None:
    x = sine(440, 0.5)
    wave = load_audio(encode(x, subtype=subtype))
    assert wave.dtype == torch.float32
    assert wave.shape == (8000,)
    np.testing.assert_allclose(wave.numpy(), x, atol=WAV_SUBTYPES[subtype])


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_compressed_formats_keep_length_and_pitch(fmt: str) -> None:
    x = sine(1000, 1.0, 44_100)
    wave = load_audio(encode(x, 44_100, fmt))
    # Lossy codecs may add or drop a few ms of encoder delay; the duration must still be right.
    assert abs(wave.numel() - SAMPLE_RATE) <= (0 if fmt == "flac" else 0.05 * SAMPLE_RATE)
    assert peak_frequency(wave) == pytest.approx(1000, abs=5)
    assert 0.4 < float(wave.abs().max()) <= 1.0


def test_mp3_is_writable_here_or_the_test_above_skips() -> None:
    # Documents the dependency the mp3 case relies on rather than silently passing it.
    if not mp3_writable():
        pytest.skip("libsndfile without MP3 support")
    assert "MP3" in sf.available_formats()


def test_path_and_bytes_give_the_same_wave(tmp_path) -> None:
    data = encode(sine(440, 0.3, 22_050), 22_050, "flac")
    path = tmp_path / "clip.flac"
    path.write_bytes(data)
    assert torch.equal(load_audio(path), load_audio(data))
    assert torch.equal(load_audio(str(path)), load_audio(bytearray(data)))
    assert torch.equal(load_audio(memoryview(data)), load_audio(data))


def test_container_is_sniffed_not_taken_from_the_extension(tmp_path) -> None:
    path = tmp_path / "actually_flac.wav"
    path.write_bytes(encode(sine(440, 0.2), fmt="flac"))
    assert load_audio(path).numel() == 3200


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_is_mixed_to_mono(channels: int) -> None:
    x = sine(440, 0.25, channels=channels)
    x[:, 0] = 0  # a silent channel lowers the mix by 1/channels: a mean, not a sum or a pick
    raw, sr = sf.read(io.BytesIO(encode(x, subtype="FLOAT")), dtype="float32")  # the file really has them all
    assert raw.shape == (4000, channels) and sr == SAMPLE_RATE
    wave = load_audio(encode(x, subtype="FLOAT"))
    assert wave.shape == (4000,)
    np.testing.assert_allclose(wave.numpy(), x[:, 1] * (channels - 1) / channels, atol=1e-6)


def test_opposite_stereo_channels_cancel() -> None:
    x = sine(440, 0.25, channels=2)
    x[:, 1] = -x[:, 0]
    assert is_silent(load_audio(encode(x, subtype="FLOAT")))


@pytest.mark.parametrize("sr", [8_000, 22_050, 44_100, 48_000, 96_000])
def test_resampled_to_16k_keeps_duration_and_pitch(sr: int) -> None:
    wave = load_audio(encode(sine(1000, 2.0, sr), sr))
    assert wave.numel() == 2 * SAMPLE_RATE
    assert peak_frequency(wave) == pytest.approx(1000, abs=2)
    # Resampling must not change the level of an in-band tone.
    assert float(wave[1000:-1000].abs().max()) == pytest.approx(0.5, abs=0.02)


def test_content_above_the_new_nyquist_is_removed() -> None:
    wave = load_audio(encode(sine(12_000, 1.0, 48_000), 48_000))  # 12 kHz cannot exist at 16 kHz
    assert float(wave[1000:-1000].abs().max()) < 0.01


def test_loud_float_files_are_scaled_down_quiet_ones_kept() -> None:
    loud = load_audio(encode(sine(440, 0.2, amplitude=3.0), subtype="FLOAT"))
    assert float(loud.abs().max()) == pytest.approx(1.0, abs=1e-6)
    quiet = load_audio(encode(sine(440, 0.2, amplitude=0.01), subtype="FLOAT"))
    assert float(quiet.abs().max()) == pytest.approx(0.01, rel=1e-4)  # never scaled up


def test_trim_removes_leading_and_trailing_silence() -> None:
    x = np.concatenate([np.zeros(8000), sine(440, 0.5), np.zeros(4000)]).astype(np.float32)
    trimmed = load_audio(encode(x, subtype="FLOAT"), trim=True)
    # Trimming works in 10 ms frames, so it may keep up to one frame of silence at either end.
    assert 8000 <= trimmed.numel() <= 8000 + 2 * 160
    assert float(trimmed[:160].abs().max()) > 0.1 or float(trimmed[160:320].abs().max()) > 0.1
    assert load_audio(encode(x, subtype="FLOAT")).numel() == x.size  # off by default


def test_trim_keeps_silent_and_fully_loud_clips() -> None:
    silent = torch.zeros(5000)
    assert torch.equal(trim_silence(silent), silent)  # nothing to keep is not "empty"
    loud = torch.from_numpy(sine(440, 0.3))
    assert torch.equal(trim_silence(loud), loud)  # including the ragged tail after the last full frame


def test_to_wav_bytes_round_trip() -> None:
    x = torch.from_numpy(sine(440, 0.1))
    back = load_audio(to_wav_bytes(x))
    assert back.shape == x.shape
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)


# ---- bad input: each raises its own typed error, with a message a person can act on ---------------

def _expect(error: type[AudioError], data, *words: str, **kw) -> AudioError:
    with pytest.raises(error) as info:
        load_audio(data, **kw)
    message = str(info.value)
    for w in words:
        assert w.lower() in message.lower(), message
    assert "Traceback" not in message
    return info.value


def test_empty_bytes() -> None:
    _expect(EmptyAudioError, b"", "empty", "0 bytes")


def test_zero_length_wav() -> None:
    _expect(EmptyAudioError, encode(np.zeros(0, np.float32)), "no samples")


def test_missing_file(tmp_path) -> None:
    _expect(DecodeError, tmp_path / "nope.wav", "nope.wav", "no such file")


def test_file_name_is_in_the_message(tmp_path) -> None:
    path = tmp_path / "my_clip.wav"
    path.write_bytes(b"")
    _expect(EmptyAudioError, path, "my_clip.wav")


def test_truncated_header_is_a_decode_error() -> None:
    data = encode(sine(440, 0.5))
    _expect(DecodeError, data[:30], "wav", "truncated")


def test_truncated_data_gives_the_samples_that_are_there() -> None:
    # A wav cut mid-data is what an interrupted upload looks like: decoding what arrived is more useful
    # than refusing it, and the length says honestly how much that is.
    data = encode(sine(440, 1.0))
    wave = load_audio(data[: 44 + 2 * 6000])
    assert wave.numel() == 6000


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"this is a text file, renamed to .wav\n" * 5, "text"),
        (png_bytes(), "image"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "image"),
        (zip_bytes(), "zip"),
        (b"%PDF-1.4\n" + bytes(range(256)), "PDF"),
    ],
)
def test_non_audio_renamed_to_wav(tmp_path, data: bytes, kind: str) -> None:
    path = tmp_path / "sound.wav"
    path.write_bytes(data)
    _expect(UnsupportedFormatError, path, "sound.wav", "not audio", kind)


def test_random_bytes_are_a_decode_error_listing_what_works() -> None:
    rng = np.random.default_rng(0)
    _expect(DecodeError, b"\x00\x01" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(), "WAV, FLAC, OGG, MP3")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_samples(value: float) -> None:
    _expect(InvalidSamplesError, float_wav_with(value), "NaN or infinite", "1 ")


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + bytes(200), "m4a"),
        (b"\x1aE\xdf\xa3\x9fB\x86\x81\x01B\xf7\x81\x01B\xf2\x81\x04webm" + bytes(200), "webm"),
    ],
)
def test_m4a_and_webm_need_torchcodec(data: bytes, kind: str) -> None:
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:
        err = _expect(UnsupportedFormatError, data, kind, "torchcodec", "WAV, FLAC, OGG")
        assert isinstance(err, DecodeError)  # callers catching DecodeError catch this too
    else:  # with FFmpeg present these fake headers must still fail cleanly
        _expect(DecodeError, data, kind)


def test_over_the_cap_is_refused_with_the_length_and_the_limit() -> None:
    assert MAX_SECONDS == 60
    data = encode(np.zeros(8000 * 61, np.float32), 8000)
    _expect(TooLongError, data, "61.0 s", "60 s")
    _expect(TooLongError, encode(sine(440, 3.0)), "3.0 s", "2.5 s", max_seconds=2.5)
    assert load_audio(data, max_seconds=None).numel() == 61 * SAMPLE_RATE
    assert load_audio(data, max_seconds=61).numel() == 61 * SAMPLE_RATE


def test_ten_minute_clip_refused_by_default_but_usable_without_the_cap(long_clip) -> None:
    _expect(TooLongError, long_clip, "600.0 s", "60 s")
    wave = load_audio(long_clip, max_seconds=None)
    assert wave.numel() == 600 * SAMPLE_RATE
    assert np.isfinite(wave.numpy()).all()


def test_errors_are_value_errors_for_generic_callers() -> None:
    for err in (EmptyAudioError, DecodeError, UnsupportedFormatError, InvalidSamplesError, TooLongError):
        assert issubclass(err, AudioError) and issubclass(err, ValueError)


# ---- odd but valid --------------------------------------------------------------------------------

def test_all_silent_audio_decodes_without_nan() -> None:
    wave = load_audio(encode(np.zeros(16000, np.float32)))
    assert torch.count_nonzero(wave) == 0 and is_silent(wave)
    assert torch.isfinite(load_audio(encode(np.zeros(16000, np.float32)), trim=True)).all()


def test_ten_millisecond_clip() -> None:
    wave = load_audio(encode(sine(440, 0.01, 44_100), 44_100))
    assert wave.numel() == 160
    batch, starts = windows(wave)
    assert batch.shape == (1, WINDOW) and starts == [-(WINDOW - 160) // 2]


# ---- windows ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 160, WINDOW - 1, WINDOW, WINDOW + 1, 5 * SAMPLE_RATE, 80_000 + 7])
def test_every_clip_length_gives_full_windows(n: int) -> None:
    wave = torch.randn(n)
    batch, starts = windows(wave)
    assert batch.shape[1] == WINDOW
    for b, s in zip(batch, starts, strict=True):
        lo, hi = max(s, 0), min(s + WINDOW, n)
        # Each window holds exactly the clip's samples it claims to start at.
        assert torch.equal(b[lo - s : hi - s], wave[lo:hi])


def test_short_clip_is_centred_in_zeros() -> None:
    wave = torch.ones(1000)
    padded = pad_to_window(wave)
    assert padded.numel() == WINDOW
    left = (WINDOW - 1000) // 2
    assert padded[:left].abs().sum() == 0 and padded[left + 1000 :].abs().sum() == 0
    assert padded[left : left + 1000].sum() == 1000


def test_ten_evenly_spaced_crops_cover_start_and_end() -> None:
    n = 5 * SAMPLE_RATE
    starts = window_starts(n)
    assert len(starts) == 10 and starts[0] == 0 and starts[-1] == n - WINDOW
    gaps = np.diff(starts)
    assert gaps.max() - gaps.min() <= 1  # evenly spaced, up to rounding


def test_sliding_windows_cover_the_end_of_the_clip() -> None:
    n = 3 * SAMPLE_RATE + 123
    hop = SAMPLE_RATE // 2
    starts = window_starts(n, hop=hop)
    assert starts[:3] == [0, hop, 2 * hop]
    assert starts[-1] == n - WINDOW  # the last window ends exactly at the clip's end
    assert starts == [0, hop, 2 * hop, n - WINDOW]  # 3 * hop was 109 samples from the last: replaced by it
    assert all(0 < b - a <= hop * 5 / 4 for a, b in zip(starts, starts[1:], strict=False))
    batch, _ = windows(torch.randn(n), hop=hop)
    assert batch.shape == (len(starts), WINDOW)
    # A clip whose end falls just past the grid: its last window replaces the grid's last, never twice the same.
    near = window_starts(WINDOW + 7 * hop + 4, hop=hop)
    assert near == [0, hop, 2 * hop, 3 * hop, 4 * hop, 5 * hop, 6 * hop, 7 * hop + 4]
    assert window_starts(WINDOW + 4, hop=hop) == [0, 4]  # the clip's start and its end are both covered


def test_bad_hop_is_refused() -> None:
    with pytest.raises(ValueError, match="hop"):
        window_starts(100_000, hop=0)


def test_ten_minute_clip_windows_in_bounded_memory(long_clip) -> None:
    """Predicting along a 10-minute clip every 0.5 s never materialises its ~1,200 windows at once."""
    from conftest import tiny_model

    from envnet.predict import BATCH, predict

    wave = load_audio(long_clip, max_seconds=None)
    starts = window_starts(wave.numel(), hop=SAMPLE_RATE // 2)
    assert len(starts) == 1198

    class Spy(torch.nn.Module):
        """Records each batch's size; runs one real window per batch to keep the test quick."""

        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner, self.config, self.sizes = inner, inner.config, []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.sizes.append(x.shape[0])
            return self.inner(x[:1]).expand(x.shape[0], -1)

    spy = Spy(tiny_model())
    pred = predict(spy, wave, ["a", "b", "c"], hop=SAMPLE_RATE // 2)
    assert sum(spy.sizes) == 1198 and max(spy.sizes) <= BATCH
    assert pred.window_probs.shape == (1198, 3)
    assert pred.starts[-1] == wave.numel() - WINDOW


@pytest.mark.parametrize("n", [8_000, 24_014, 80_000])
def test_window_at_gives_the_window_that_windows_lists(n: int) -> None:
    from envnet.audio import window_at

    wave = torch.randn(n)
    batch, starts = windows(wave, hop=4_000)
    for i, s in enumerate(starts):
        assert torch.equal(window_at(wave, s), batch[i])
