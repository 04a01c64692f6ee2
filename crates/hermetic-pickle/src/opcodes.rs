//! The one opcode table for pickle protocols 0 to 5.
//!
//! Everything that needs to know about opcodes (the parser, the disassembler,
//! the symbolic machine, the evaluator) reads it from here, so the tables can
//! never drift apart.

/// How an opcode's inline argument is encoded in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    None,
    Uint1,
    Uint2,
    Int4,
    Uint4,
    Uint8,
    /// Decimal digits up to a newline; `00`/`01` mean False/True.
    DecimalNlShort,
    /// Decimal digits with an optional trailing `L`, up to a newline.
    DecimalNlLong,
    FloatNl,
    /// Big-endian IEEE 754 double.
    Float8,
    Long1,
    Long4,
    /// A quoted, backslash-escaped string up to a newline (protocol 0 `STRING`).
    StringNl,
    /// An unquoted line (persistent ids).
    StringNlNoescape,
    /// Two unquoted lines (module and name).
    StringNlNoescapePair,
    String1,
    String4,
    Bytes1,
    Bytes4,
    Bytes8,
    ByteArray8,
    /// raw-unicode-escape text up to a newline.
    UnicodeStringNl,
    UnicodeString1,
    UnicodeString4,
    UnicodeString8,
}

macro_rules! opcodes {
    ($( $name:ident = $code:literal, $arg:ident, $proto:literal; )*) => {
        /// A pickle opcode. The discriminant is the opcode byte.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        pub enum Opcode { $($name = $code,)* }

        impl Opcode {
            /// Every opcode, in table order.
            pub const ALL: &'static [Opcode] = &[$(Opcode::$name,)*];

            /// The opcode for a byte, or `None` when no protocol defines it.
            pub const fn from_byte(b: u8) -> Option<Opcode> {
                match b { $($code => Some(Opcode::$name),)* _ => None }
            }

            /// The name `pickletools` uses.
            pub const fn name(self) -> &'static str {
                match self { $(Opcode::$name => stringify!($name),)* }
            }

            pub const fn arg_kind(self) -> ArgKind {
                match self { $(Opcode::$name => ArgKind::$arg,)* }
            }

            /// The first protocol that defines the opcode.
            pub const fn protocol(self) -> u8 {
                match self { $(Opcode::$name => $proto,)* }
            }

            pub const fn byte(self) -> u8 { self as u8 }
        }
    };
}

opcodes! {
    INT = b'I', DecimalNlShort, 0;
    BININT = b'J', Int4, 1;
    BININT1 = b'K', Uint1, 1;
    BININT2 = b'M', Uint2, 1;
    LONG = b'L', DecimalNlLong, 0;
    LONG1 = 0x8a, Long1, 2;
    LONG4 = 0x8b, Long4, 2;
    STRING = b'S', StringNl, 0;
    BINSTRING = b'T', String4, 1;
    SHORT_BINSTRING = b'U', String1, 1;
    BINBYTES = b'B', Bytes4, 3;
    SHORT_BINBYTES = b'C', Bytes1, 3;
    BINBYTES8 = 0x8e, Bytes8, 4;
    BYTEARRAY8 = 0x96, ByteArray8, 5;
    NEXT_BUFFER = 0x97, None, 5;
    READONLY_BUFFER = 0x98, None, 5;
    NONE = b'N', None, 0;
    NEWTRUE = 0x88, None, 2;
    NEWFALSE = 0x89, None, 2;
    UNICODE = b'V', UnicodeStringNl, 0;
    SHORT_BINUNICODE = 0x8c, UnicodeString1, 4;
    BINUNICODE = b'X', UnicodeString4, 1;
    BINUNICODE8 = 0x8d, UnicodeString8, 4;
    FLOAT = b'F', FloatNl, 0;
    BINFLOAT = b'G', Float8, 1;
    EMPTY_LIST = b']', None, 1;
    APPEND = b'a', None, 0;
    APPENDS = b'e', None, 1;
    LIST = b'l', None, 0;
    EMPTY_TUPLE = b')', None, 1;
    TUPLE = b't', None, 0;
    TUPLE1 = 0x85, None, 2;
    TUPLE2 = 0x86, None, 2;
    TUPLE3 = 0x87, None, 2;
    EMPTY_DICT = b'}', None, 1;
    DICT = b'd', None, 0;
    SETITEM = b's', None, 0;
    SETITEMS = b'u', None, 1;
    EMPTY_SET = 0x8f, None, 4;
    ADDITEMS = 0x90, None, 4;
    FROZENSET = 0x91, None, 4;
    POP = b'0', None, 0;
    DUP = b'2', None, 0;
    MARK = b'(', None, 0;
    POP_MARK = b'1', None, 1;
    GET = b'g', DecimalNlShort, 0;
    BINGET = b'h', Uint1, 1;
    LONG_BINGET = b'j', Uint4, 1;
    PUT = b'p', DecimalNlShort, 0;
    BINPUT = b'q', Uint1, 1;
    LONG_BINPUT = b'r', Uint4, 1;
    MEMOIZE = 0x94, None, 4;
    EXT1 = 0x82, Uint1, 2;
    EXT2 = 0x83, Uint2, 2;
    EXT4 = 0x84, Int4, 2;
    GLOBAL = b'c', StringNlNoescapePair, 0;
    STACK_GLOBAL = 0x93, None, 4;
    REDUCE = b'R', None, 0;
    BUILD = b'b', None, 0;
    INST = b'i', StringNlNoescapePair, 0;
    OBJ = b'o', None, 1;
    NEWOBJ = 0x81, None, 2;
    NEWOBJ_EX = 0x92, None, 4;
    PROTO = 0x80, Uint1, 2;
    STOP = b'.', None, 0;
    FRAME = 0x95, Uint8, 4;
    PERSID = b'P', StringNlNoescape, 0;
    BINPERSID = b'Q', None, 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_consistent() {
        assert_eq!(Opcode::ALL.len(), 68);
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_byte(op.byte()), Some(*op));
        }
        let defined = (0u8..=255)
            .filter(|b| Opcode::from_byte(*b).is_some())
            .count();
        assert_eq!(defined, 68);
    }
}
