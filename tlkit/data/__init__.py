"""Offline domain-shift datasets (领域偏移数据): everything comes from installed packages, never the network.

- :func:`digits_shift` — scikit-learn digits → rotated / noisy / inverted / MNIST-M-style colour-blended digits;
- :func:`moons_shift` — two moons with covariate, label or conditional shift, or rotated (for DANN);
- :func:`shimodaira_toy` (+ :func:`shimodaira_importance`) and :func:`biased_diabetes` — sample-selection bias
  in regression;
- :func:`pang_lee_polarity` and :func:`lee_corpus` — text from gensim's test data;
- real benchmarks vendored in ``files/``: :func:`load_mnist_usps`, :func:`load_usps`, :func:`load_coil20`,
  :func:`load_amazon_reviews`, :func:`amazon_pair` (see ``files/README.md`` for sources and terms), and
  cached EfficientNet-Lite0 features of those digits, :func:`load_mnist_usps_features`.

A missing file raises an error naming the package that ships it. Used in lessons 02, 04, 05, 06, 09, 10, 11.
"""
from .domains import (DomainShift, biased_diabetes, digits_shift, moons_shift, shimodaira_importance,
                      shimodaira_toy)
from .benchmarks import (AMAZON_DOMAINS, LabelledSet, amazon_pair, load_amazon_reviews, load_coil20,
                         load_mnist_usps, load_mnist_usps_features, load_usps, usps_as_digits)
from .text import lee_corpus, pang_lee_polarity

__all__ = ["DomainShift", "digits_shift", "moons_shift", "shimodaira_toy", "shimodaira_importance",
           "biased_diabetes", "pang_lee_polarity", "lee_corpus", "LabelledSet", "load_mnist_usps", "load_usps",
           "load_coil20", "load_amazon_reviews", "amazon_pair", "usps_as_digits", "load_mnist_usps_features",
           "AMAZON_DOMAINS"]
