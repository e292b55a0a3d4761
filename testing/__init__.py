"""Test helpers shared by several apps' tests: no app's tests import another app's tests."""
