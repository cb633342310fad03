"""flatminima: reproduction of Mulayoff & Michaeli (ICML 2020); see README.md for the layout."""
