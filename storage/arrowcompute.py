"""Arrow's compute functions, without importing `pyarrow.compute`.

That import wraps each of Arrow's ~290 functions in Python and parses its
docstring as it goes: ~0.1 s of CPU, a third of a `dpl list-file` of
100,000 files.  The functions themselves live in Arrow's registry
(`pyarrow._compute`, a few ms to import); this module calls them there the
way pyarrow.compute's generic wrappers do, one function looked up at its
first use: `arrowcompute.is_in(paths, value_set=s)` is `pc.is_in(...)`.
Arguments up to the function's arity are its data, the rest (by position
or by name) its options; `and_` and `or_` are "and" and "or".

pyarrow.compute's hand-written functions are not these: `fill_null` is
`coalesce` here, and `cast` takes its options' arguments (it is safe by
default, as there).  pyarrow's own computing methods (`Array.take`,
`Table.filter`, `Array.cast`, `==` between arrays) import pyarrow.compute:
code that stays lean calls `take`, `filter`, `cast`, `equal` here instead.
Nothing imports pyarrow until a function is first asked for.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name.startswith("__"):  # the import system's questions (__path__, __file__ ...), not functions
        raise AttributeError(name)
    from pyarrow import _compute

    try:
        func = _compute.get_function(name.removesuffix("_"))  # and_, or_: Python keywords
    except KeyError:  # pyarrow's ArrowKeyError: no such function
        raise AttributeError(f"Arrow has no compute function {name!r}") from None
    arity = func.arity
    options_name = func._doc.options_class
    options_class = getattr(_compute, options_name) if options_name else None

    def call(*args, options=None, memory_pool=None, **named):
        data, extra = (args, ()) if arity is Ellipsis else (args[:arity], args[arity:])
        if extra or named:
            options = options_class(*extra, **named)
        return func.call(list(data), options, memory_pool)

    call.__name__ = call.__qualname__ = name
    globals()[name] = call  # looked up once: later calls find it as a plain attribute
    return call
