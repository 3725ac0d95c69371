"""UCI Online Retail (CC BY 4.0, doi:10.24432/C5BW33) into landing files.

Every CSV row becomes one raw event line: invoices are purchases, cancellations (invoice numbers
starting with ``C``) are returns, the invoice is the session, the unit price is ``context.price``.
Each event gets an ``event_id`` hashed from its whole row, so a row the export repeats is a counted
duplicate. A return is linked (``linked_event_id``) to the customer's latest earlier purchase of the
same stock code that is not yet fully returned; returns of purchases before the export's first day
stay unlinked. Nothing is filtered here: rows without a customer, non-product codes, zero prices or
negative quantities reach the clean stage as they are, which quarantines them with a reason. Rows the
CSV reader cannot split are written as they were, so the clean stage quarantines them as malformed.
Descriptions become the item catalog's titles.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sparkrec.adapters import write_jsonl, write_profile

COLUMNS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
# Fees, postage and manual adjustments of this shop: not products (set as clean.non_product_items).
NON_PRODUCT_ITEMS = r"^(POST|DOT|M|m|C2|D|S|B|CRUK|PADS|AMAZONFEE|BANK CHARGES|gift_.*)$"


@dataclass(frozen=True)
class ImportSummary:
    events: int
    items: int
    days: list[str]
    # Cancellations, and those linked to the purchase they reverse.
    returns: int = 0
    linked_returns: int = 0


def to_event(row: dict[str, str]) -> dict[str, object]:
    """One CSV row as a raw event of the landing contract."""
    invoice = (row.get("InvoiceNo") or "").strip()
    is_return = invoice.upper().startswith("C")
    event: dict[str, object] = {
        "event_id": "or-" + hashlib.sha256("\x1f".join(row.get(c) or "" for c in COLUMNS).encode()).hexdigest()[:24],
        "user_id": _clean_id(row.get("CustomerID")),
        "item_id": (row.get("StockCode") or "").strip() or None,
        "event_type": "return" if is_return else "purchase",
        "ts": (row.get("InvoiceDate") or "").strip() or None,
        "value": _quantity(row.get("Quantity"), is_return),
        "session_id": invoice or None,
        "context": {"country": row.get("Country"), "price": _number(row.get("UnitPrice"))},
    }
    return {k: v for k, v in event.items() if v is not None}


def _clean_id(value: str | None) -> str | None:
    text = (value or "").strip()
    if not text:
        return None
    return text[:-2] if text.endswith(".0") else text


def _quantity(value: str | None, is_return: bool) -> object:
    number = _number(value)
    if not isinstance(number, int | float):
        return number
    # A cancellation carries a negative quantity; as a return event its value is the amount returned.
    return -number if is_return else number


def _number(value: str | None) -> object:
    """The CSV text as an int or float; text that is not a number is left for the clean stage to judge."""
    text = (value or "").strip()
    try:
        number = float(text)
    except ValueError:
        return text or None
    return int(number) if number.is_integer() else number


class ReturnLinker:
    """Links each return to the customer's latest earlier purchase of the item with quantity left."""

    def __init__(self) -> None:
        # (user, item) -> [event_id, quantity not yet returned, ts], oldest first.
        self.open: dict[tuple[object, object], list[list[object]]] = defaultdict(list)
        self.seen: set[object] = set()
        self.returns = 0
        self.linked = 0

    def add(self, event: dict[str, object]) -> None:
        key = (event.get("user_id"), event.get("item_id"))
        quantity = event.get("value")
        if key[0] is None or not isinstance(quantity, int | float) or quantity <= 0:
            return
        if event["event_type"] == "purchase" and event["event_id"] not in self.seen:
            self.seen.add(event["event_id"])
            self.open[key].append([event["event_id"], quantity, event.get("ts")])
        elif event["event_type"] == "return":
            self.returns += 1
            ts = str(event.get("ts", ""))
            for purchase in reversed(self.open.get(key, [])):
                left = float(purchase[1])  # type: ignore[arg-type]
                if left > 0 and str(purchase[2]) <= ts:
                    event["linked_event_id"] = purchase[0]
                    purchase[1] = left - min(left, float(quantity))
                    self.linked += 1
                    break


def day_of(ts: str) -> str | None:
    day = ts[:10]
    return day if len(day) == 10 and day[4] == "-" and day[7] == "-" else None


def read_rows(lines: Iterable[str]) -> Iterator[tuple[dict[str, str] | None, str]]:
    """Yield (row, raw line); row is None for a line that does not split into the columns."""
    iterator = iter(lines)
    header = next(csv.reader([next(iterator)]))
    if header != COLUMNS:
        raise ValueError(f"not an Online Retail CSV: header {header}, expected {COLUMNS}")
    for line in iterator:
        if not line.strip():
            continue
        fields = next(csv.reader([line]), [])
        if len(fields) != len(COLUMNS):
            yield None, line.rstrip("\n")
        else:
            yield dict(zip(COLUMNS, fields, strict=True)), line.rstrip("\n")


def import_online_retail(csv_path: str | Path, landing_root: str | Path) -> ImportSummary:
    """Write ``events/ds=D/online_retail.jsonl.gz`` and ``items/ds=D/catalog.jsonl.gz`` per invoice day.

    Re-running overwrites the same files, so the landing zone never doubles.
    """
    events: dict[str, list[str]] = defaultdict(list)
    items: dict[str, dict[str, dict[str, object]]] = defaultdict(dict)
    last_day = None
    linker = ReturnLinker()
    opener = gzip.open if str(csv_path).endswith(".gz") else open
    with opener(csv_path, "rt", encoding="utf-8", errors="replace", newline="") as handle:
        for row, raw in read_rows(_logical_lines(handle)):
            if row is None:
                # Unsplittable: keep the raw text on the day we are in, as a malformed record.
                events[last_day or "unknown"].append(raw)
                continue
            event = to_event(row)
            linker.add(event)
            day = day_of(str(event.get("ts", ""))) or last_day or "unknown"
            last_day = day
            events[day].append(json.dumps(event, ensure_ascii=False))
            _note_item(items[day], row)
    root = Path(landing_root)
    for day, lines in events.items():
        write_jsonl(root / "events" / f"ds={day}" / "online_retail.jsonl.gz", lines)
    for day, catalog in items.items():
        lines = [json.dumps(item, ensure_ascii=False) for item in catalog.values()]
        write_jsonl(root / "items" / f"ds={day}" / "catalog.jsonl.gz", lines)
    write_profile(
        root,
        "online-retail",
        # Guest checkouts carry no CustomerID: up to 77 % of a day's rows are missing_user.
        {"late_days": 7, "non_product_items": NON_PRODUCT_ITEMS, "max_quarantine_share": 0.9},
        "UCI Online Retail: one landing day per invoice day; fees and postage are not products",
    )
    return ImportSummary(
        events=sum(len(v) for v in events.values()),
        items=len({i for c in items.values() for i in c}),
        days=sorted(events),
        returns=linker.returns,
        linked_returns=linker.linked,
    )


def _logical_lines(handle: io.TextIOBase) -> Iterator[str]:
    """CSV records, joining physical lines inside quoted fields."""
    buffer = ""
    for line in handle:
        buffer += line
        if buffer.count('"') % 2 == 0:
            yield buffer
            buffer = ""
    if buffer:
        yield buffer


def _note_item(catalog: dict[str, dict[str, object]], row: dict[str, str]) -> None:
    """Keep the day's latest description and positive price per stock code."""
    item_id = row["StockCode"].strip()
    if not item_id:
        return
    current = catalog.get(item_id)
    title = row["Description"].strip() or None
    try:
        price = float(row["UnitPrice"])
    except ValueError:
        price = None
    ts = row["InvoiceDate"].strip()
    if current is None:
        current = catalog[item_id] = {"item_id": item_id, "title": None, "price": None, "updated_at": ts}
    if title:
        current["title"] = title
    if price is not None and price > 0:
        current["price"] = price
    current["updated_at"] = max(str(current["updated_at"]), ts)
