"""Generated Goodbooks-shaped book metadata: books.csv, tags.csv and book_tags.csv.

Used when no real metadata is given. Books belong to latent topics; a topic has its own title
words and tags, authors write mostly in one topic, a third of the books form series. The columns
are those of Goodbooks-10k, so the same pipeline reads them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

NUM_TOPICS = 24
TAGS_PER_TOPIC = 30
GENERIC_TAGS = ["to-read", "favorites", "currently-reading", "owned", "books-i-own", "fiction",
                "library", "kindle", "ebook", "default", "my-books", "wish-list", "audiobook",
                "re-read", "book-club", "abandoned", "series", "audio", "non-fiction", "classics"]
RARE_TAGS = 400  # a long tail of tags on a few books each (the recipe's min-books filter drops them)
_SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vor", "shi", "an", "del", "mur", "zen", "pa", "qui", "el",
              "dra", "to", "bel", "nor", "fi", "gan", "sol", "ur", "vin", "hex", "mo", "tri", "sa", "lum"]
LANGUAGES = ["eng", "en-US", "en-GB", "spa", "fre", "ger", "en-CA", "ita", "jpn", "ara"]
LANGUAGE_P = [0.60, 0.22, 0.05, 0.015, 0.012, 0.01, 0.008, 0.005, 0.004, 0.003]


def _words(rng: np.random.Generator, n: int, syllables: tuple[int, int] = (2, 3)) -> list[str]:
    """``n`` distinct made-up words."""
    out: dict[str, None] = {}
    while len(out) < n:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        out["".join(rng.choice(_SYLLABLES, size=k))] = None
    return list(out)


def _authors(rng: np.random.Generator, n_books: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Author names, each author's topic, and each book's author (Zipf-like books per author)."""
    n_authors = max(2, int(n_books / 2.1))
    first, last = _words(rng, 300), _words(rng, 2000)
    fi, li = rng.integers(0, len(first), size=2 * n_authors), rng.integers(0, len(last), size=2 * n_authors)
    names = list(dict.fromkeys(f"{first[a].title()} {last[b].title()}" for a, b in zip(fi, li)))[:n_authors]
    n_authors = len(names)
    topic = rng.integers(0, NUM_TOPICS, size=n_authors)
    weight = 1.0 / np.arange(1, n_authors + 1) ** 0.9
    book_author = rng.choice(n_authors, size=n_books, p=weight / weight.sum())
    # Every author writes at least one book, so the vocabulary is what it says.
    book_author[rng.permutation(n_books)[: min(n_books, n_authors)]] = np.arange(min(n_books, n_authors))
    return names, topic, book_author


def generate_books(out: str | Path, n_books: int, seed: int) -> None:
    """Write books.csv, tags.csv and book_tags.csv for ``n_books`` generated books into ``out``."""
    rng = np.random.default_rng([seed, 1])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    topic_words = [_words(rng, 12) for _ in range(NUM_TOPICS)]
    common_words = ["the", "of", "a", "night", "house", "last", "secret", "girl", "world", "city"]
    names, author_topic, book_author = _authors(rng, n_books)
    primary = np.where(rng.random(n_books) < 0.8, author_topic[book_author],
                       rng.integers(0, NUM_TOPICS, size=n_books))
    secondary = np.where(rng.random(n_books) < 0.4, rng.integers(0, NUM_TOPICS, size=n_books), -1)
    titles = _titles(rng, n_books, primary, book_author, topic_words, common_words)
    co_author = rng.random(n_books) < 0.08
    authors = [names[a] + (f", {names[rng.integers(len(names))]}" if co else "")
               for a, co in zip(book_author, co_author)]
    year = np.round(np.clip(rng.normal(1998, 18, size=n_books), -500, 2017)).astype(float)
    year[rng.random(n_books) < 0.03] = np.nan
    lang = rng.choice(LANGUAGES, size=n_books, p=np.array(LANGUAGE_P) / sum(LANGUAGE_P)).astype(object)
    lang[rng.random(n_books) < 0.1] = None
    ratings_count = np.round(np.exp(rng.normal(10.6, 1.1, size=n_books)) + 2700).astype(np.int64)
    order = np.argsort(-ratings_count, kind="stable")  # Goodbooks numbers books by popularity
    gr_ids = np.sort(rng.choice(np.arange(1, 40 * n_books + 1000), size=n_books, replace=False))
    books = pd.DataFrame({
        "book_id": np.arange(1, n_books + 1), "goodreads_book_id": gr_ids[order],
        "authors": np.array(authors, dtype=object)[order], "original_publication_year": year[order],
        "title": np.array(titles, dtype=object)[order], "language_code": lang[order],
        "ratings_count": ratings_count[order]})
    books.to_csv(out / "books.csv", index=False, lineterminator="\n")
    tag_names = _tag_names(rng, topic_words)
    pd.DataFrame({"tag_id": np.arange(len(tag_names)), "tag_name": tag_names}).to_csv(
        out / "tags.csv", index=False, lineterminator="\n")
    _book_tags(rng, gr_ids[order], primary[order], secondary[order], ratings_count[order]).to_csv(
        out / "book_tags.csv", index=False, lineterminator="\n")


def _titles(rng: np.random.Generator, n_books: int, primary: np.ndarray, book_author: np.ndarray,
            topic_words: list[list[str]], common: list[str]) -> list[str]:
    """Titles from topic words; about a third of books are in a series by the same author."""
    titles: list[str] = []
    series_of: dict[int, tuple[str, int]] = {}
    used: set[str] = set()
    for i in range(n_books):
        words = list(rng.choice(topic_words[primary[i]], size=int(rng.integers(1, 3))))
        words += list(rng.choice(common, size=int(rng.integers(0, 3))))
        title = " ".join(rng.permutation(words)).title()
        a = int(book_author[i])
        if a in series_of and rng.random() < 0.6:
            name, k = series_of[a]
            series_of[a] = (name, k + 1)
            title = f"{title} ({name}, #{k + 1})"
        elif rng.random() < 0.2:
            name = " ".join(rng.choice(topic_words[primary[i]], size=2)).title()
            while name in used:  # one name, one series
                name = " ".join(rng.choice(topic_words[primary[i]], size=3)).title()
            used.add(name)
            series_of[a] = (name, 1)
            title = f"{title} ({name}, #1)"
        titles.append(title)
    return titles


def _tag_names(rng: np.random.Generator, topic_words: list[list[str]]) -> list[str]:
    names = list(GENERIC_TAGS)
    for t in range(NUM_TOPICS):
        stem = topic_words[t][0]
        names += [f"{stem}-{w}" for w in _words(rng, TAGS_PER_TOPIC, (1, 2))]
    names += [f"rare-{w}" for w in _words(rng, RARE_TAGS, (3, 4))]
    return names


def _book_tags(rng: np.random.Generator, gr_ids: np.ndarray, primary: np.ndarray, secondary: np.ndarray,
               ratings_count: np.ndarray) -> pd.DataFrame:
    """Generic tags on every book, many tags of its topics, a few off-topic and rare ones."""
    g = len(GENERIC_TAGS)
    rows_book, rows_tag, rows_count = [], [], []
    for i in range(len(gr_ids)):
        scale = ratings_count[i] / 50.0
        tags = list(range(g))
        weights = list(rng.uniform(0.5, 3.0, size=g))
        for topic, share in ((primary[i], 1.0), (secondary[i], 0.4)):
            if topic < 0:
                continue
            chosen = rng.choice(TAGS_PER_TOPIC, size=int(rng.integers(8, 20)), replace=False)
            tags += list(g + topic * TAGS_PER_TOPIC + chosen)
            weights += list(share * rng.uniform(0.05, 1.0, size=len(chosen)))
        off = rng.integers(g, g + NUM_TOPICS * TAGS_PER_TOPIC, size=5)
        rare = g + NUM_TOPICS * TAGS_PER_TOPIC + rng.integers(0, RARE_TAGS, size=3)
        tags += list(off) + list(rare)
        weights += list(rng.uniform(0.001, 0.02, size=8))
        tag_arr, first = np.unique(np.array(tags), return_index=True)
        counts = np.maximum(1, np.round(np.array(weights)[first] * scale * rng.uniform(0.5, 1.5, len(first))))
        rows_book.append(np.full(len(tag_arr), gr_ids[i]))
        rows_tag.append(tag_arr)
        rows_count.append(counts.astype(np.int64))
    return pd.DataFrame({"goodreads_book_id": np.concatenate(rows_book), "tag_id": np.concatenate(rows_tag),
                         "count": np.concatenate(rows_count)})
