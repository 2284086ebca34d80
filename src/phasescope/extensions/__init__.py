"""The built-in extensions (each a module or package of its own; :mod:`phasescope.registry` lists them).

- :mod:`.samples`: per-sample dynamics, "the few" (``SampleDynamics``, on by default)
- :mod:`.reconstructions`: decoded test images over training (``Reconstructions``, on by default)
- :mod:`.transfer`: transfer probes (``TransferProbes``, ``--transfer``) and their tasks
- :mod:`.stopping`: the best-features keeper (``BestFeaturesKeeper``, ``--keep-best``/``--stop-on-increase``)
- :mod:`.infoplane`: the information plane (``InfoPlane``, ``--info-plane``)
- :mod:`.ridge_sweep`: the decoder at several ridges (``RidgeSweep``, ``--ridge`` with a list)

A module added here is a built-in extension without any other change: the registry finds the
Extension subclasses defined in this package's modules (``registry.discovered``); only those
whose order matters are listed in ``registry.BUILTIN``.

Their old import paths (``phasescope.samples``, ``phasescope.infoplane``, ...) still work and give the
same module objects, with a DeprecationWarning (:mod:`phasescope._moved`). Third-party extensions
install as plug-ins (the ``phasescope.extensions`` entry-point group; README, "Write an extension").
"""
