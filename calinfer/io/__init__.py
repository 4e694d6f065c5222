"""Shower files in and out: ROOT TTrees (uproot) and HDF5 (CaloChallenge MeV or calinfer GeV layout),
plus the LHC Olympics dijet feature files (:mod:`calinfer.io.lhco`).

Readers return :class:`calinfer.Showers` in GeV, chunk by chunk with :func:`iterate_showers` (bounded memory)
or all at once with :func:`read_showers`; every chunk is validated and errors name the file and the entries.
Writers create new files atomically and store a metadata JSON (geometry id, creator, version) that
:func:`read_metadata` returns and the readers check against the requested geometry.
"""

from __future__ import annotations

from calinfer.io.atomic import atomic_output, check_not_input
from calinfer.io.hdf5 import write_hdf5
from calinfer.io.lhco import (
    EXTRA_FEATURES,
    JET_COLUMNS,
    STANDARD_FEATURES,
    dijet_features,
    lhco_files,
    load_dijets,
    read_lhco,
    read_lhco_metadata,
)
from calinfer.io.metadata import METADATA_KEY
from calinfer.io.root import RootTreeWriter, write_tree
from calinfer.io.showers_io import (
    file_format,
    inspect_file,
    iterate_showers,
    matching_geometries,
    open_reader,
    read_metadata,
    read_showers,
    resolve_geometry,
    write_showers,
)
from calinfer.io.source import FileInfo
from calinfer.io.validation import NegativeEnergyWarning

__all__ = [
    "EXTRA_FEATURES",
    "JET_COLUMNS",
    "METADATA_KEY",
    "STANDARD_FEATURES",
    "FileInfo",
    "NegativeEnergyWarning",
    "RootTreeWriter",
    "atomic_output",
    "check_not_input",
    "dijet_features",
    "file_format",
    "inspect_file",
    "iterate_showers",
    "lhco_files",
    "load_dijets",
    "matching_geometries",
    "open_reader",
    "read_lhco",
    "read_lhco_metadata",
    "read_metadata",
    "read_showers",
    "resolve_geometry",
    "write_hdf5",
    "write_showers",
    "write_tree",
]
