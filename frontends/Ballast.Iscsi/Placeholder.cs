namespace Ballast.Iscsi;
