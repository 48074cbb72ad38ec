"""cyclip's tests: a package, so that test files import `tests.helpers` without a sys.path patch."""
