"""Configures and installs the extension's real CMake files against a small stand-in Slicer build tree.

The stand-in ``SlicerConfig.cmake`` gives what the extension's CMake files use from Slicer: the version (through a
``SlicerConfigVersion.cmake``, as Slicer's own), its Python version, the scripted-module folders and the two macros
that copy and install Python files. They follow ``ctkMacroCompilePythonScript`` and
``slicerMacroBuildScriptedModule`` of CTK and Slicer 5.10: scripts and resources named relative to the source
folder are copied under ``DESTINATION_DIR`` with their relative paths, a missing file is an error, and the whole
destination folder is installed into ``INSTALL_DIR``. Compiling to ``.pyc``, generic tests and packaging are left
out. ``cmake --install`` then lays out what an installed extension holds.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]

CONFIG_VERSION = """
set(PACKAGE_VERSION "{version}")
if(PACKAGE_VERSION VERSION_LESS PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_VERSION VERSION_EQUAL PACKAGE_FIND_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
"""

CONFIG = """
set(Slicer_USE_FILE "${{CMAKE_CURRENT_LIST_DIR}}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${{CMAKE_CURRENT_LIST_DIR}}/Nothing.cmake")
set(Slicer_EXTENSION_CPACK "${{CMAKE_CURRENT_LIST_DIR}}/Nothing.cmake")
set(Slicer_REQUIRED_PYTHON_VERSION "{python}")
set(Slicer_USE_PYTHONQT ON)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-{version}/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${{Slicer_QTSCRIPTEDMODULES_LIB_DIR}}")
"""

USE_FILE = """
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR"
    "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "ctkMacroCompilePythonScript: unknown arguments ${MY_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT MY_SOURCE_DIR)
    set(MY_SOURCE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
  endif()
  foreach(file IN LISTS MY_SCRIPTS MY_RESOURCES)
    if(NOT EXISTS "${MY_SOURCE_DIR}/${file}")
      message(FATAL_ERROR "ctkMacroCompilePythonScript(${MY_TARGET_NAME}): nonexistent file '${file}'")
    endif()
    configure_file("${MY_SOURCE_DIR}/${file}" "${MY_DESTINATION_DIR}/${file}" COPYONLY)
  endforeach()
  if(MY_NO_INSTALL_SUBDIR)
    install(DIRECTORY "${MY_DESTINATION_DIR}/" DESTINATION "${MY_INSTALL_DIR}")
  else()
    install(DIRECTORY "${MY_DESTINATION_DIR}" DESTINATION "${MY_INSTALL_DIR}")
  endif()
endmacro()

macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY_SLICER "WITH_GENERIC_TESTS;WITH_SUBDIR;VERBOSE" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule: unknown arguments ${MY_SLICER_UNPARSED_ARGUMENTS}")
  endif()
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_SLICER_NAME}
    SCRIPTS "${MY_SLICER_SCRIPTS}"
    RESOURCES "${MY_SLICER_RESOURCES}"
    DESTINATION_DIR "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"
    INSTALL_DIR "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}"
    NO_INSTALL_SUBDIR
    )
endmacro()

function(slicer_add_python_unittest)
endfunction()
"""


def cmake() -> str:
    """The ``cmake`` program (the machines that run the tests have CMake 3.25 and a C++ compiler)."""
    found = shutil.which("cmake")
    if found is None:
        raise FileNotFoundError("cmake is not on PATH; the extension's CMake files need it to be checked")
    return found


def stand_in_slicer(folder: Path, version: str = "5.10", python: str = "3.12") -> Path:
    """Writes the stand-in Slicer build tree (``Slicer_DIR``) of a Slicer ``version`` bundling ``python``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SlicerConfigVersion.cmake").write_text(CONFIG_VERSION.format(version=version))
    (folder / "SlicerConfig.cmake").write_text(CONFIG.format(version=version, python=python))
    (folder / "UseSlicer.cmake").write_text(USE_FILE)
    (folder / "Nothing.cmake").write_text("")
    return folder


def configure(folder: Path, version: str = "5.10", python: str = "3.12") -> subprocess.CompletedProcess:
    """Configures the repository's top-level CMakeLists.txt in ``folder/build`` (not checked)."""
    slicer_dir = stand_in_slicer(folder / "Slicer", version, python)
    return subprocess.run(
        [cmake(), "-S", str(REPOSITORY_ROOT), "-B", str(folder / "build"), f"-DSlicer_DIR={slicer_dir}",
         "-DBUILD_TESTING=OFF"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def install_extension(folder: Path, version: str = "5.10") -> Path:
    """Configures and installs the extension into ``folder/install``; returns its ``qt-scripted-modules`` folder.

    Raises:
        RuntimeError: CMake failed (its output is in the message).
    """
    for command in (None, ["--install", str(folder / "build"), "--prefix", str(folder / "install")]):
        if command is None:
            completed = configure(folder, version)
        else:
            completed = subprocess.run([cmake(), *command], capture_output=True, text=True, timeout=300)
        if completed.returncode != 0:
            raise RuntimeError(f"cmake failed:\n{completed.stdout}\n{completed.stderr}")
    return folder / "install" / "lib" / f"Slicer-{version}" / "qt-scripted-modules"
