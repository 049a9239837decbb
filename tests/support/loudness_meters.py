"""Loudness meters this project does not run, and the test sources they are tried on.

Shared by the loudness tests of the media library (tests/audio) and of the flow
(tests/e2e): pyloudnorm (an independent BS.1770-4 implementation) for integrated loudness,
ffmpeg's ebur128 filter called directly for true peak, and three lavfi sources:

* quiet: -35 LUFS pink noise with single-sample clicks whose peaks a plain +19 dB gain
  would clip, so the limiter path is exercised;
* loud: -8 LUFS, uncorrelated stereo pink noise pushed into clipping;
* clipping: a full-scale square wave, true peak above 0 dBTP.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pyloudnorm

__all__ = ["ebur128_direct", "ffprobe_stream", "loudness_sources", "pyloudnorm_integrated"]

_SQUARE = "if(lt(mod(t*220\\,1)\\,0.5)\\,1\\,-1)"
#: One sample at 0.5 every 2.5 s: a true peak near -6 dBTP, next to no energy.
_CLICKS = "0.5*eq(mod(n\\,110250)\\,1000)"


def loudness_sources(seconds: float, rate: int) -> dict[str, tuple[str, ...]]:
    """ffmpeg input arguments making each source (`seconds` long, at `rate`)."""
    return {
        "quiet": (
            "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:c=pink:r={rate}:a=0.075:seed=5",
            "-f", "lavfi", "-i", f"aevalsrc=exprs={_CLICKS}:s={rate}:d={seconds}",
            "-filter_complex",
            "[0:a]lowpass=f=10000[n];[n][1:a]amix=inputs=2:normalize=0,pan=stereo|c0=c0|c1=c0",
        ),
        "loud": (
            "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:c=pink:r={rate}:a=1:seed=3",
            "-f", "lavfi", "-i", f"anoisesrc=d={seconds}:c=pink:r={rate}:a=1:seed=4",
            "-filter_complex",
            "[0:a][1:a]join=inputs=2:channel_layout=stereo,lowpass=f=10000,volume=5dB",
        ),
        "clipping": (
            "-f", "lavfi", "-i", f"aevalsrc=exprs='{_SQUARE}|{_SQUARE}':s={rate}:d={seconds}",
        ),
    }  # fmt: skip


# --- the independent meters ----------------------------------------------------------------


def ffprobe_stream(path: Path) -> dict[str, object]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=sample_rate,channels", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    stream: dict[str, object] = json.loads(done.stdout)["streams"][0]
    return stream


def ebur128_direct(path: Path, pre: str = "") -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP) from ffmpeg's ebur128 run here, on its stderr."""
    chain = f"{pre}," if pre else ""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-i", str(path),
         "-af", f"{chain}ebur128=peak=true", "-f", "null", "-"],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    summary = done.stderr[done.stderr.rindex("Summary:") :]
    integrated = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))  # type: ignore[union-attr]
    peak = re.search(r"Peak:\s+(-?inf|-?[\d.]+) dBFS", summary).group(1)  # type: ignore[union-attr]
    return integrated, float(peak)


def pyloudnorm_integrated(path: Path, *, mono: bool = False) -> float:
    """Integrated loudness by pyloudnorm, on the file decoded to float PCM at its own rate
    (downmixed to mono by ffmpeg's -ac 1 when `mono`)."""
    stream = ffprobe_stream(path)
    rate = int(str(stream["sample_rate"]))
    channels = 1 if mono else int(str(stream["channels"]))
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-ac", str(channels),
         "-f", "f32le", "-c:a", "pcm_f32le", "-"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    samples = np.frombuffer(done.stdout, dtype="<f4").astype(np.float64)
    data = samples.reshape(-1, channels) if channels > 1 else samples
    return float(pyloudnorm.Meter(rate).integrated_loudness(data))
