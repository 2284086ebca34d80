"""Outputs: a run folder's files and what is drawn from them.

``runs`` (reading and writing the files of a run folder, its lock), ``figures`` (curves and the
extensions' figures), ``html`` (report.html and the index page), ``compare`` (several runs side by
side) and ``rebuild`` (``phasescope report``: everything again from a folder's files). It reads
what the engine measured; it never trains.
"""
