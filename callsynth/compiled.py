"""How per-frame arithmetic that numpy does badly is compiled (numba): the speech stream's kernels
(audio2exp) and the carrying of a repair back onto the still (face.warp.splat_back).

A stream asks for a few feature frames and one window a frame: as numpy calls, per-call overhead was most
of their cost. Compiled once per machine into numba's cache (beside the modules, or in the user's cache
folder when the installation is read-only: librosa's own kernels are cached the same way), and with the GIL
released, so the call's other threads run meanwhile. Plain loops over arrays and scalars: numba compiles
slices, np.sort and array expressions in seconds, loops in a fraction of that."""

from __future__ import annotations

from numba import njit

compiled = njit(cache=True, nogil=True)
