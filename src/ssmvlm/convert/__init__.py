"""Conversion between ssmvlm runs and the run folders of the paper's release and prismatic-vlms.

``from_release(SRC, OUT, llm_dir=...)`` reads a release or prismatic run folder (``config.json`` +
``checkpoints/latest-checkpoint.pt``) into an ssmvlm run folder; ``to_release(RUN, DST)`` writes an ssmvlm run
in that layout. The tensors survive a round trip bit for bit.
"""

from ssmvlm.convert.release import ConvertResult, from_release, to_release

__all__ = ["ConvertResult", "from_release", "to_release"]
