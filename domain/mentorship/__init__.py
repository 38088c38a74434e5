"""Mentorship: ranked mentors, selection under capacity, relationship lifecycle, assignment."""
