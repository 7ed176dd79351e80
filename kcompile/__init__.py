"""kcompile: compile a trained KirchhoffNet into a SPICE circuit and verify it.

Data flows one way, one stage per module::

    knet (load/validate) -> reference (NumPy ODE)      \
                         -> netlist (Jinja) -> ngspice -> compare -> report
"""

__version__ = "0.1.0"
