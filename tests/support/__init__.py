"""Helpers shared by test tiers (model files the tests make themselves)."""
