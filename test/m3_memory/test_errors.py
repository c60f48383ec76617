"""The error kinds: InputError only for bad input; build, safety and dependency failures apart."""

import pytest

from m3_memory.errors import (
    EXIT_BAD_INPUT,
    EXIT_BUILD_FAILED,
    EXIT_MISSING_DEPENDENCY,
    EXIT_SAFETY_REFUSAL,
    BuildFailed,
    InputError,
    M3Error,
    MissingDependency,
    SafetyRefusal,
    describe,
    missing_dependency,
)


@pytest.mark.parametrize("kind, code", [(InputError, EXIT_BAD_INPUT), (BuildFailed, EXIT_BUILD_FAILED),
                                        (SafetyRefusal, EXIT_SAFETY_REFUSAL), (MissingDependency, EXIT_MISSING_DEPENDENCY)])
def test_each_kind_has_its_code_and_only_input_errors_are_input_errors(kind, code):
    err = kind("x.bag", "what\nis   wrong")
    assert isinstance(err, M3Error) and describe(err) == ("x.bag: what is wrong", code)
    assert isinstance(err, InputError) == (kind is InputError)


def test_missing_dependency_names_the_extra():
    try:
        import pyrealsense2_not_here  # noqa: F401
    except ImportError as err:
        missing = missing_dependency(err, "reading .bag recordings", "pyrealsense2")
    assert missing.exit_code == EXIT_MISSING_DEPENDENCY
    assert str(missing).startswith("pyrealsense2: ") and "pip install 'm3_memory[realsense]'" in str(missing)


def test_import_error_of_an_undeclared_package_names_the_package():
    line, code = describe(ModuleNotFoundError("No module named 'foo'", name="foo"))
    assert code == EXIT_MISSING_DEPENDENCY and line.startswith("foo: is not installed") and line.endswith("pip install foo")
