"""The bilevel search loop: architecture step (1st/2nd order) and the search stage."""
