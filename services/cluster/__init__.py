"""The cluster service: repeat unknown offenders across stores (faust-streaming on rfr.matches.v1; rfr/cluster/)."""
