"""Test doubles that live in the package so both the test suite and the benchmarks can use them."""
