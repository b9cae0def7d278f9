"""Video in ``sr upscale``: frames streamed through the model with bounded memory, timing,
audio, subtitles and colour tags kept, resumable segments, atomic output.

Modules: :mod:`.ffmpeg` (the bundled binary), :mod:`.probe` (what a file holds, frame
timestamps), :mod:`.mkvpipe` (raw frames with timestamps to the encoder), :mod:`.streams`
(reader/writer threads), :mod:`.encode` (codec, pixel format, stream copy rules),
:mod:`.segments` (work folder, resume, final mux) and :mod:`.pipeline` (the jobs).
"""

from sr_cli.video.pipeline import VideoOptions, upscale_videos

__all__ = ["VideoOptions", "upscale_videos"]
